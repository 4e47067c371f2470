"""The thread policy (noisecraft.runs.threads): one intra-op thread per CPU that other processes leave free;
configured counts and OMP_NUM_THREADS win; the demo's budget is a step count, so load cannot change it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from noisecraft.runs import threads
from noisecraft.runs.demo import DEMO_STEPS, demo_config


def test_a_configured_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(5) == (5, "as configured")
    assert threads.choose_threads()[0] == 3


@pytest.mark.parametrize(("busy", "expected"), [(0.0, 2), (0.1, 2), (0.4, 1), (1.0, 1), (1.9, 1), (3.0, 1)])
def test_one_thread_per_free_cpu(monkeypatch: pytest.MonkeyPatch, busy: float, expected: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda window: busy)
    n, why = threads.choose_threads()
    assert n == expected and f"{busy:.1f} busy" in why


def test_without_proc_stat_every_cpu_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda window: None)
    assert threads.choose_threads()[0] == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_neighbour_is_seen() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert threads.busy_elsewhere(0.5) >= 0.6  # the spinner takes about one CPU (less when the machine is full)
    finally:
        spinner.kill()
        spinner.wait()


def test_the_demo_budget_is_steps_not_minutes() -> None:
    cfg = demo_config()
    assert cfg.train.max_steps == DEMO_STEPS and cfg.train.minutes is None
