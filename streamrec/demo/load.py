"""The load of ``streamrec demo``: the shop's users in sessions, through the real server."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time

import grpc

from messaging.producer import EventProducer, RateLimiter
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.topics import Topic
from streamrec.demo.shop import Shop, UserView
from streamrec.demo.summary import Summary

__all__ = ["THINK_S", "WATCHED", "Load"]

THINK_S = (0.4, 1.2)  # pause between two steps of one session (the worker applies meanwhile)
WATCHED = 3


class Load:
    """Sessions of the shop's users at a steady event rate, through the real server."""

    def __init__(
        self,
        shop: Shop,
        stub: pb_grpc.RecommenderAsyncStub,
        producer: EventProducer,
        summary: Summary,
        rate: float,
        timeout_s: float,
    ) -> None:
        self.shop = shop
        self.stub = stub
        self.producer = producer
        self.summary = summary
        self.limiter = RateLimiter(rate, burst=max(1, int(rate * 0.1)))
        self.timeout_s = timeout_s
        self._rng = random.Random(shop.config.seed + 1)
        users = list(shop.users)
        self.watched = users[:WATCHED]
        self._idle = users[WATCHED:]
        self._rng.shuffle(self._idle)
        self._due: list[tuple[float, int, str]] = []
        self._seq = 0
        self.views: dict[str, UserView] = {u: shop.view(u) for u in self.watched}
        # sessions in flight for `rate` events/s with THINK_S pauses (the limiter caps the rate)
        think = sum(THINK_S) / 2
        self.concurrency = max(4, min(len(users) - WATCHED, int(rate * think) + 1))
        self._wake = asyncio.Event()

    def _schedule(self, user: str, delay: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, user))
        self._wake.set()

    def _new_session(self, delay: float) -> None:
        user = self._idle.pop(0)
        self.shop.start_session(user)
        self._schedule(user, delay)

    async def run(self, stop: asyncio.Event) -> None:
        for user in self.watched:
            self.shop.start_session(user)
            self._schedule(user, self._rng.uniform(0, 0.5))
        for _ in range(self.concurrency):
            self._new_session(self._rng.uniform(0, sum(THINK_S)))
        drivers = min(64, self.concurrency)
        tasks = [asyncio.create_task(self._driver(stop)) for _ in range(drivers)]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def _next_user(self, stop: asyncio.Event) -> str | None:
        while not stop.is_set():
            if self._due and self._due[0][0] <= time.monotonic():
                return heapq.heappop(self._due)[2]
            self._wake.clear()
            wait = self._due[0][0] - time.monotonic() if self._due else 0.2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, min(wait, 0.2)))
        return None

    async def _driver(self, stop: asyncio.Event) -> None:
        while (user := await self._next_user(stop)) is not None:
            await self._step(user)

    async def _step(self, user: str) -> None:
        shop, summary = self.shop, self.summary
        context = pb.Context(
            tenant=shop.context.tenant, surface=shop.context.surface, locale=shop.context.locale
        )
        request = pb.RecommendRequest(user_id=user, k=shop.config.k, context=context)
        answer: list[str] = []
        request_id: str | None = None
        started = time.monotonic()
        try:
            response = await self.stub.Recommend(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            summary.request_errors += 1
            summary.error_codes[exc.code().name] = summary.error_codes.get(exc.code().name, 0) + 1
        else:
            summary.latencies_ms.append((time.monotonic() - started) * 1000)
            answer = [item.item_id for item in response.items]
            request_id = response.request_id or None
            if response.fallback_stage != pb.FALLBACK_STAGE_NONE:
                summary.fallback_answers += 1
        summary.requests += 1
        step = shop.act(user, answer, request_id)
        if answer:
            summary.hits.add(step)
        await self.limiter.acquire(len(step.outcomes))
        for outcome in step.outcomes:
            await self.producer.send_event(Topic.OUTCOMES, outcome)
        summary.produced += len(step.outcomes)
        if user in self.views:
            self.views[user] = shop.view(user, answer[:5])
        think = self._rng.uniform(*THINK_S)
        if not step.session_over:
            self._schedule(user, think)
        elif user in self.views:  # watched users come straight back: the view keeps changing
            shop.start_session(user)
            self._schedule(user, think)
        else:
            self._idle.append(user)
            self._new_session(think)
