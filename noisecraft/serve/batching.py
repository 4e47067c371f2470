"""Diffusion-aware micro-batching: requests that can share one solver call (same model, solver, steps, grid,
guidance kind and shape: one *key*) are merged, up to a maximum number of rows, and split back.

General-purpose batchers (BentoML, Ray Serve, LitServe) merge by arrival: two diffusion requests with
different step counts cannot share a solver loop, so they either refuse to merge them or pad them into the
longest. Here one worker takes the oldest waiting request and adds every waiting request of its key, oldest
first, while the rows fit; requests of other keys wait for the next turn, so nobody starves. The worker waits
for more requests only when the service is busy (more than one request queued, or the last batch merged
several), and then for a tenth of the last batch's time at most (capped by `max_wait`), stopping as soon as the
rows are full: a lone client never waits, and under load a request pays at most that fraction.

The queue is bounded (a full queue is refused at once, no unbounded memory); a caller that stops waiting
(timeout, client gone) cancels its future, and the worker drops it before its batch runs. One worker thread
runs the batches: on a CPU the network already uses every core, and two concurrent batches would only fight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The service holds `max_queue` requests already; the caller should retry later (HTTP 429)."""


class Closed(RuntimeError):
    """The batcher is shutting down and takes no new requests (HTTP 503)."""


@dataclass
class Job:
    key: Hashable
    rows: int
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


#: execute(key, payloads) -> one result per payload, in order; runs in the worker thread
Execute = Callable[[Hashable, list[Any]], list[Any]]
#: on_batch(rows, jobs, seconds): called after each batch (metrics)
OnBatch = Callable[[int, int, float], None]


class MicroBatcher:
    """Merges waiting jobs of one key into one `execute` call (see the module docstring)."""

    def __init__(self, execute: Execute, max_rows: int = 64, max_wait: float = 0.1, max_queue: int = 128,
                 on_batch: OnBatch | None = None, wait_fraction: float = 0.1) -> None:
        self.execute, self.max_rows, self.max_wait, self.max_queue = execute, max_rows, max_wait, max_queue
        self.wait_fraction = wait_fraction
        self._last_seconds = 0.0
        self.on_batch = on_batch
        self._queue: list[Job] = []
        self._running = 0  # jobs in the batch now executing
        self._last_jobs = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.closed = False

    # -- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.closed = False
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="noisecraft-batch")
        self._worker = asyncio.create_task(self._loop())

    async def stop(self, drain: bool = True) -> None:
        """Take no new jobs; with `drain`, finish every job already accepted first."""
        self.closed = True
        if drain:
            while self.depth:
                self._wake.set()
                await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._queue:
            job.future.cancel()
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Jobs waiting (not cancelled) plus jobs running."""
        return sum(not job.future.done() for job in self._queue) + self._running

    def drain_seconds(self) -> float:
        """A guess of how long the jobs held now take: their count over the last batch's size, times its time."""
        return self.depth / max(1, self._last_jobs) * self._last_seconds

    # -- submitting -------------------------------------------------------------------------------
    async def submit(self, key: Hashable, rows: int, payload: Any) -> Any:
        """Queue one job and wait for its result. Raises Closed, QueueFull, or what `execute` raised.
        Cancelling the caller cancels the job if it has not started."""
        if self.closed or self._worker is None:
            raise Closed("the service is shutting down")
        if self.depth >= self.max_queue:
            raise QueueFull(f"{self.depth} requests are queued or running (max_queue {self.max_queue})")
        job = Job(key, rows, payload, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    # -- the worker -------------------------------------------------------------------------------
    def _take(self) -> list[Job]:
        """The oldest live job and every live job of its key behind it whose rows still fit."""
        self._queue = [job for job in self._queue if not job.future.done()]
        if not self._queue:
            return []
        head = self._queue[0]
        batch, rows = [head], head.rows
        for job in self._queue[1:]:
            if job.key == head.key and rows + job.rows <= self.max_rows:
                batch.append(job)
                rows += job.rows
        taken = {id(job) for job in batch}
        self._queue = [job for job in self._queue if id(job) not in taken]
        return batch

    def _head_rows(self) -> int:
        """Rows waiting under the oldest live job's key."""
        live = [job for job in self._queue if not job.future.done()]
        return sum(job.rows for job in live if job.key == live[0].key) if live else 0

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """While the service is busy, wait for company: until the oldest key's rows reach max_rows, or for
        `wait_fraction` of the last batch's time (at most `max_wait`). Answered clients come back within a
        few milliseconds of each other; a fixed wait shorter than that splits them into alternating half-full
        batches, a wait proportional to the batch time costs every request the same small fraction."""
        busy = len(self._queue) > 1 or self._last_jobs > 1
        if not busy or self.max_rows <= 1:
            return
        deadline = loop.time() + min(self.max_wait, self.wait_fraction * self._last_seconds)
        while self._head_rows() < self.max_rows and (remaining := deadline - loop.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while any(not job.future.done() for job in self._queue):
                await self._gather(loop)
                batch = self._take()
                if not batch:
                    break
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Job]) -> None:
        self._running, self._last_jobs = len(batch), len(batch)
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.execute, batch[0].key,
                                                 [job.payload for job in batch])
        except Exception as err:  # noqa: BLE001 (handed to every caller of the batch)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
        else:
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self._running = 0
        self._last_seconds = time.perf_counter() - start
        if self.on_batch is not None:
            self.on_batch(sum(job.rows for job in batch), len(batch), self._last_seconds)


__all__ = ["Closed", "Execute", "Job", "MicroBatcher", "QueueFull"]
