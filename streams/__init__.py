"""Ingest: decoding, batch planning, atomic Redis updates and the faust app that runs them."""
