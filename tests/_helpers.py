"""Helpers importable from test modules as `tests._helpers` (tests/ is a regular package)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torchrun(script: Path, *args: object, processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `script args` on `processes` CPU processes with torchrun (gloo, one thread each, a free loopback port),
    in an environment cleared of any launcher's variables; fails the test with stderr's tail if it fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
           "127.0.0.1", "--master_port", str(port), str(script), *map(str, args)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
