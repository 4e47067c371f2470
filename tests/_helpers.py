"""Helpers importable from test modules as `tests._helpers` (tests/ is a regular package)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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


ROUTES = {(o, d): 300 + 170 * i + 90 * j for i, o in enumerate("ABC") for j, d in enumerate("PQRSTUVW")}


def routes(n: int = 3000, strays: int = 2, seed: int = 0) -> pd.DataFrame:
    """(origin, dest) -> distance except `strays` rows flown at another distance (0.07%: an approximate
    dependency); cabin -> fee exactly; seats (three values) and delay independent of everything."""
    rng = np.random.default_rng(seed)
    origin, dest = rng.choice(list("ABC"), n), rng.choice(list("PQRSTUVW"), n)
    distance = np.array([ROUTES[od] for od in zip(origin, dest)])
    distance[:strays] += 7
    cabin = rng.choice(["economy", "business"], n, p=[0.8, 0.2])
    return pd.DataFrame({"origin": origin, "dest": dest, "distance": distance, "cabin": cabin,
                         "fee": np.where(cabin == "business", 90.5, 20.0), "seats": rng.choice([100, 150, 200], n),
                         "delay": rng.exponential(20.0, n)})
