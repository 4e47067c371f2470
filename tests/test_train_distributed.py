"""Two-process training on CPU with torchrun and gloo: synchronized gradients, identical weights on both
ranks, one checkpoint writer, the data split between ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tests._helpers import torchrun
from safetensors.torch import load_file

from noisecraft.runs.loop import batch_indices
from noisecraft.runs.train import process_slice, train

WORKER = Path(__file__).with_name("train_dist_worker.py")


def test_process_slices_partition_the_global_batch() -> None:
    idx = batch_indices(100, 16, step=3, seed=0)
    parts = [idx[process_slice(16, 2, m, r, 2)] for m in range(2) for r in range(2)]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.sort(idx).values)
    assert len(set(torch.cat(parts).tolist())) == 16  # disjoint
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        process_slice(16, 1, 0, 0, 3)


def test_batches_cover_each_epoch_once() -> None:
    seen = torch.cat([batch_indices(10, 4, s, seed=1) for s in range(5)])  # 20 draws = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))


@pytest.mark.slow
def test_two_processes_match_each_other_and_one_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    torchrun(WORKER, tmp_path / "run", out, timeout=240)
    info = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(i["world"] == 2 and i["backend"] == "gloo" for i in info), info
    w0, w1 = (load_file(str(out / f"rank{r}.safetensors")) for r in range(2))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # synchronized gradients: identical weights
    # one writer: a single set of checkpoints, no stray temporary directories
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["latest", "step_00000002", "step_00000003"]
    # the same global batches in one process give the same weights: the ranks split the data, DDP averages
    sys.path.insert(0, str(WORKER.parent))
    from train_dist_worker import tiny_config

    single = train(tiny_config(), tmp_path / "single", progress=False).model.state_dict()
    assert all(torch.allclose(single[k], w0[k], atol=1e-6) for k in w0)
