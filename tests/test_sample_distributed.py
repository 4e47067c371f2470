"""Sampling on two processes (torchrun, gloo on CPU) gives the samples of one process for the same seed:
bitwise with a fixed evaluation batch, to the documented tolerance without; every process gets all rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests._helpers import torchrun
from safetensors.torch import load_file

from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.distributed import shard
from noisecraft.runs.evaluate import evaluate_run
from noisecraft.runs.pipeline import load_run
from noisecraft.runs.train import train

WORKER = Path(__file__).with_name("sample_dist_worker.py")


def test_shards_partition_the_rows() -> None:
    for n in (1, 2, 7, 100):
        for size in (1, 2, 3, 8):
            rows = [list(shard(n, size, r)) for r in range(size)]
            assert [i for part in rows for i in part] == list(range(n))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_a_shard_draws_the_rows_of_the_whole_batch(tmp_path: Path) -> None:
    from noisecraft.core.noise import SampleNoise

    whole = SampleNoise(11, 7).randn((3,), torch.float32, "cpu")
    part = SampleNoise(11, 3, first=4).randn((3,), torch.float32, "cpu")
    assert torch.equal(part, whole[4:])


@pytest.mark.slow
def test_two_processes_sample_what_one_process_samples(tmp_path: Path) -> None:
    cfg = preset_config("digits", "edm", max_steps=2, batch_size=8, checkpoint_every=2)
    cfg = cfg.model_copy(update={"model": NetConfig(block_channels=[16, 32], attention=[False, True],
                                                    layers_per_block=1)})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    torchrun(WORKER, run, out, timeout=240)
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # every process holds all rows
    fixed = load_run(run, eval_batch=4).sample(7, steps=3, seed=5, solver="euler_maruyama")
    whole = load_run(run).sample(7, steps=3, seed=5)
    assert torch.equal(ranks[0]["fixed"], fixed)
    assert (ranks[0]["whole"] - whole).abs().max() < 1e-4
    # the commands: one .npy and one eval.json, written by rank 0, equal to what one process writes
    assert sorted(p.name for p in out.iterdir()) == ["cli.npy", "rank0.safetensors", "rank1.safetensors"]
    assert np.array_equal(np.load(out / "cli.npy"), fixed.numpy())
    two = json.loads((run / "eval.json").read_text())
    one = evaluate_run(run, 20, None, 3, 5, eval_batch=4)
    assert two["digits_fd"] == one["digits_fd"] and two["class_histogram"] == one["class_histogram"]


def test_a_stream_fills_a_small_first_block_then_whole_blocks() -> None:
    """Row i's k-th draw is the k-th block of its own stream whatever the buffering: two draws (x_T and one step)
    take FIRST_BLOCK draws from the generator, not sixteen, and later draws continue the same stream."""
    from noisecraft.core.noise import FIRST_BLOCK, SampleNoise, stream_generator

    noise = SampleNoise(3, 2, block=4)
    draws = [noise.randn((5,), torch.float64, "cpu") for _ in range(FIRST_BLOCK)]
    used = stream_generator(3, 1)
    torch.randn((FIRST_BLOCK, 5), generator=used, dtype=torch.float64)
    assert torch.equal(noise._streams()[1].get_state(), used.get_state())  # no draw beyond the first block
    draws += [noise.randn((5,), torch.float64, "cpu") for _ in range(6)]
    for row in range(2):
        gen = stream_generator(3, row)
        want = torch.cat([torch.randn((size, 5), generator=gen, dtype=torch.float64) for size in (FIRST_BLOCK, 4, 4)])
        assert torch.equal(torch.stack([d[row] for d in draws]), want[: len(draws)])
