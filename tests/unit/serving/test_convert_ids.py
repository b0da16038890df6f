"""Request ids (serving.convert): the id contract and the pii policy, as INVALID_ARGUMENT text."""

from __future__ import annotations

import pytest

from schemas import recommender_pb2 as pb
from schemas.ids import PiiPolicy, Pseudonyms
from serving.convert import InvalidRequest, parse_recommend, parse_similar

KEY = b"a-key-of-sixteen-bytes-or-more"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (pb.RecommendRequest(k=3, user_id="u\t1"), "user_id contains the control character U.0009"),
        (pb.RecommendRequest(k=3, user_id="   "), "user_id is only whitespace"),
        (pb.RecommendRequest(k=3, session_id="s\x7f"), "session_id contains the control character"),
        (
            pb.RecommendRequest(k=3, user_id="u1", exclude_item_ids=["ok", "\u3000"]),
            "an entry of exclude_item_ids is only whitespace",
        ),
        (
            pb.RecommendRequest(k=3, user_id="u1", anchor_item_ids=["a\x00"]),
            "an entry of anchor_item_ids contains",
        ),
    ],
)
def test_bad_request_ids_are_refused(request_: pb.RecommendRequest, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        parse_recommend(request_)


def test_bad_item_id_of_similar_items_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="item_id is only whitespace"):
        parse_similar(pb.SimilarItemsRequest(k=3, item_id=" "))


def test_reject_policy_refuses_pii_user_ids() -> None:
    with pytest.raises(InvalidRequest, match="user_id looks like an e-mail address"):
        parse_recommend(pb.RecommendRequest(k=3, user_id="jane@example.com"), Pseudonyms())
    with pytest.raises(InvalidRequest, match="session_id looks like a phone number"):
        parse_similar(
            pb.SimilarItemsRequest(k=3, item_id="i1", session_id="+15551234567"), Pseudonyms()
        )
    # without a policy (tools, tests) the id is taken as it is
    assert parse_recommend(pb.RecommendRequest(k=3, user_id="jane@example.com")).user_id


def test_hash_policy_serves_the_pseudonym_the_worker_writes() -> None:
    pseudonyms = Pseudonyms(PiiPolicy.HASH, KEY)
    query = parse_recommend(pb.RecommendRequest(k=3, user_id="jane@example.com"), pseudonyms)
    assert query.user_id == pseudonyms.hashed("jane@example.com")
    plain = parse_recommend(pb.RecommendRequest(k=3, user_id="u1"), pseudonyms)
    assert plain.user_id == "u1"
