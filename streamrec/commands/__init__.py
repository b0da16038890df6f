"""CLI command groups; each module owns one group and exposes ``app`` (a typer.Typer)."""
