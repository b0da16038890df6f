"""Kafka I/O over the contracts: the event producer and topic administration."""

__all__: list[str] = []
