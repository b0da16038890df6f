"""Serving: the gRPC recommender, its pure ranker, rules, experiments and exposure log.

The names below are the API shared with the evaluator (no grpc import behind them); the gRPC
server itself is :class:`serving.server.Server` (``streamrec serve``).
"""

from serving.config import RankerConfig
from serving.ranker import Stage, rank
from serving.recommender import Recommendation, Recommender
from serving.shared_state import SharedState
from serving.state_reader import StateReader

__all__ = [
    "RankerConfig",
    "Recommendation",
    "Recommender",
    "SharedState",
    "Stage",
    "StateReader",
    "rank",
]
