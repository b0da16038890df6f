"""``streamrec topics``: create and list this deployment's Kafka topics."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from core.settings import settings
from messaging import kafka_admin

# aiokafka logs each failed connection attempt; the command reports the failure in one line.
_QUIET_LOGGERS = ("aiokafka",)

app = typer.Typer(
    help="Kafka topics of this deployment (names under STREAMREC_TOPIC_PREFIX).",
    no_args_is_help=True,
    add_completion=False,
)


def _quiet() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@app.command()
def create(
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            max=1024,
            help="Partitions per event topic [STREAMREC_PARTITIONS].",
        ),
    ] = None,
) -> None:
    """Create the missing topics (idempotent) and wait until they have leaders."""
    _quiet()
    current = settings()

    async def create_and_describe() -> tuple[set[str], list[kafka_admin.TopicInfo]]:
        created = await kafka_admin.create_topics(current, partitions)
        return {plan.name for plan in created}, await kafka_admin.describe_topics(current)

    created, infos = asyncio.run(create_and_describe())
    for info in infos:
        verb = "created" if info.name in created else "exists "
        print(f"{verb} {info.name:<40} {info.partitions:>4} partitions  {info.cleanup_policy}")


@app.command(name="list")
def list_topics() -> None:
    """List this deployment's topics; exit 1 if any is missing."""
    _quiet()
    current = settings()
    infos = {info.name: info for info in asyncio.run(kafka_admin.describe_topics(current))}
    missing = 0
    for plan in kafka_admin.topic_plan(current):
        info = infos.get(plan.name)
        if info is None:
            missing += 1
            print(f"missing {plan.name}")
        else:
            print(f"{info.name:<48} {info.partitions:>4} partitions  {info.cleanup_policy}")
    raise typer.Exit(1 if missing else 0)
