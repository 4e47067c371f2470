"""The micro-batcher (noisecraft.serve.batching) and the merged draw under it (Pipeline.sample_parts): requests
of one key merge, others do not, rows are bounded, the queue is bounded, a cancelled request never runs, and a
request's samples are bit for bit those it gets alone."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch

from noisecraft.runs.pipeline import Part
from noisecraft.serve.batching import Closed, MicroBatcher, QueueFull
from tests.test_pipeline import _train


class Recorder:
    """An execute that records its calls and returns each payload doubled; optionally blocks until released."""

    def __init__(self, hold: bool = False) -> None:
        self.calls: list[tuple[object, list]] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, key, payloads):
        self.release.wait(5)
        self.calls.append((key, list(payloads)))
        if key == "boom":
            raise RuntimeError("boom")
        return [2 * p for p in payloads]


def _run(coro):
    return asyncio.run(coro)


async def _with(batcher: MicroBatcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_requests_of_one_key_merge_and_other_keys_wait_their_turn() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.0)

    async def body():
        first = asyncio.ensure_future(batcher.submit("a", 1, 1))  # runs alone, holding the worker
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit(k, 2, v)) for k, v in [("a", 2), ("b", 3), ("a", 4), ("a", 5)]]
        await asyncio.sleep(0.05)
        rec.release.set()
        return await asyncio.gather(first, *rest)

    results = _run(_with(batcher, body))
    assert results == [2, 4, 6, 8, 10]  # every caller gets its own result back
    assert [(k, p) for k, p in rec.calls] == [("a", [1]), ("a", [2, 4, 5]), ("b", [3])]


def test_merged_rows_never_exceed_the_maximum() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=5, max_wait=0.0)

    async def body():
        block = asyncio.ensure_future(batcher.submit("x", 1, 0))
        await asyncio.sleep(0.05)
        jobs = [asyncio.ensure_future(batcher.submit("a", 2, v)) for v in range(5)]
        await asyncio.sleep(0.05)
        rec.release.set()
        await asyncio.gather(block, *jobs)

    _run(_with(batcher, body))
    sizes = [2 * len(p) for k, p in rec.calls if k == "a"]
    assert sizes == [4, 4, 2] and max(sizes) <= 5


def test_a_full_queue_is_refused_at_once() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.0, max_queue=2)

    async def body():
        jobs = [asyncio.ensure_future(batcher.submit("a", 1, v)) for v in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="max_queue 2"):
            await batcher.submit("a", 1, 9)
        rec.release.set()
        return await asyncio.gather(*jobs)

    assert _run(_with(batcher, body)) == [0, 2]


def test_a_cancelled_request_never_runs_and_frees_its_place() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.0)

    async def body():
        block = asyncio.ensure_future(batcher.submit("x", 1, 0))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit("a", 1, 7))
        kept = asyncio.ensure_future(batcher.submit("a", 1, 8))
        await asyncio.sleep(0.01)
        assert batcher.depth == 3
        gone.cancel()  # the client went away (or timed out)
        await asyncio.sleep(0.01)
        assert batcher.depth == 2
        rec.release.set()
        return await asyncio.gather(block, kept)

    assert _run(_with(batcher, body)) == [0, 16]
    assert all(7 not in payloads for _, payloads in rec.calls)


def test_a_lone_request_does_not_wait_for_company() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.5)  # a long wait that a lone request must not pay

    async def body():
        start = time.perf_counter()
        await batcher.submit("a", 1, 1)
        return time.perf_counter() - start

    assert _run(_with(batcher, body)) < 0.25


def test_a_busy_service_waits_a_fraction_of_a_batch_for_company() -> None:
    """Clients answered together come back a little later: a batch waits wait_fraction of the last batch's time
    for them, and stops waiting as soon as its rows are full."""
    calls: list[list] = []

    def slow(key, payloads):
        calls.append(list(payloads))
        time.sleep(0.2)
        return payloads

    batcher = MicroBatcher(slow, max_rows=4, max_wait=1.0, wait_fraction=0.5)

    async def body():
        await asyncio.gather(*(batcher.submit("a", 1, v) for v in range(2)))  # a merged batch: the service is busy
        first = asyncio.ensure_future(batcher.submit("a", 1, 10))
        await asyncio.sleep(0.05)  # arrives while the batch waits (up to 0.1 s)
        late = asyncio.ensure_future(batcher.submit("a", 1, 11))
        await asyncio.gather(first, late)
        start = time.perf_counter()
        await asyncio.gather(*(batcher.submit("a", 1, v) for v in range(20, 24)))  # full at once: no wait
        return time.perf_counter() - start

    assert _run(_with(batcher, body)) < 0.3
    assert calls[-2] == [10, 11] and calls[-1] == [20, 21, 22, 23]


def test_stop_finishes_accepted_work_then_refuses() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.0)

    async def body():
        await batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit("a", 1, v)) for v in range(3)]
        await asyncio.sleep(0.02)
        stopping = asyncio.ensure_future(batcher.stop(drain=True))
        await asyncio.sleep(0.02)
        with pytest.raises(Closed):
            await batcher.submit("a", 1, 5)
        rec.release.set()
        await stopping
        return [job.result() for job in jobs]

    assert _run(body()) == [0, 2, 4]


def test_an_error_reaches_every_request_of_its_batch_only() -> None:
    rec = Recorder(hold=True)
    batcher = MicroBatcher(rec, max_rows=8, max_wait=0.0)

    async def body():
        block = asyncio.ensure_future(batcher.submit("x", 1, 0))
        await asyncio.sleep(0.05)
        bad = [asyncio.ensure_future(batcher.submit("boom", 1, v)) for v in range(2)]
        good = asyncio.ensure_future(batcher.submit("a", 1, 3))
        rec.release.set()
        return await asyncio.gather(block, *bad, good, return_exceptions=True)

    out = _run(_with(batcher, body))
    assert out[0] == 0 and out[3] == 6
    assert all(isinstance(err, RuntimeError) for err in out[1:3])


# -- the merged draw ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_batching")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    return root


@pytest.mark.parametrize("solver", ["dpm++2m", "ddpm"])  # deterministic and stochastic
def test_merged_parts_are_bitwise_the_draws_alone(runs: Path, solver: str) -> None:
    import noisecraft as nc

    pipe = nc.load_run(runs / "plain", eval_batch=8)
    parts = [Part(3, seed=11), Part(1, seed=2), Part(6, seed=11)]
    merged = pipe.sample_parts(parts, solver=solver, steps=4)
    for part, x in zip(parts, merged, strict=True):
        alone = pipe.sample(part.n, solver=solver, steps=4, seed=part.seed)
        assert torch.equal(x, alone)
    assert torch.equal(merged[0], merged[2][:3])  # same seed: the same first rows, wherever they sit


def test_merged_parts_with_different_labels_and_guidance(runs: Path) -> None:
    import noisecraft as nc

    pipe = nc.load_run(runs / "cond", eval_batch=8)
    parts = [Part(2, seed=1, label=3), Part(3, seed=5, label=7)]
    merged = pipe.sample_parts(parts, steps=3, guidance=2.0)
    for part, x in zip(parts, merged, strict=True):
        assert torch.equal(x, pipe.sample(part.n, steps=3, seed=part.seed, label=part.label, guidance=2.0))
    with pytest.raises(ValueError, match="mixes labelled and unlabelled"):
        pipe.sample_parts([Part(1, label=1), Part(1)], steps=3)
    with pytest.raises(ValueError, match="unknown class 10"):
        pipe.sample_parts([Part(1, label=10)], steps=3)


def test_without_fixed_chunks_merged_rows_are_only_close(runs: Path) -> None:
    """Why the service fixes eval_batch: whole-batch evaluation changes a row's bits with the batch size."""
    import noisecraft as nc

    pipe = nc.load_run(runs / "plain")
    merged = pipe.sample_parts([Part(1, seed=4), Part(30, seed=9)], steps=3)
    alone = pipe.sample(1, steps=3, seed=4)
    torch.testing.assert_close(merged[0], alone, atol=1e-4, rtol=0)
