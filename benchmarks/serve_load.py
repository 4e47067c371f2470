"""Benchmark (not a test): `noisecraft serve` under load, micro-batching on against off, in one run.

Issue 19. For each service configuration the script starts `python -m noisecraft.cli serve RUN` as a subprocess
on 127.0.0.1 (a free port), waits for GET /ready and sends two warm-up requests; the services run side by side
and the cells are interleaved (for each client count, each configuration in turn, only one service loaded at a
time), so load from other processes that drifts during the run reaches every configuration alike. A cell runs
that many closed-loop clients (asyncio + httpx, one connection each): a client POSTs /sample {"n": N, "seed": s}
(every other field the service's default: the model's solver, steps and grid, PNG output: what a user gets),
waits for the answer and sends the next, with a seed of its own each time, until `--seconds` have passed or
`--max-requests` have been sent; requests in flight at the deadline are answered (the service's own timeout
bounds them) and counted. The services are stopped with SIGTERM (and waited for) at the end.

Configurations (`--configs`; `--extra NAME='SERVE OPTIONS'` adds one):
- `on`: the defaults (--max-batch 64 --max-wait-ms 100 --eval-batch 32): requests merged into one solver call.
- `off`: --max-batch 1: every request runs alone, network still called in fixed 32-row chunks.
- `off-unpadded`: --max-batch 1 --eval-batch 0: every request alone at its own size, no padding (the strongest
  anchor without batching).
- `on-unpadded` (not run by default): --eval-batch 0, batching without fixed-size chunks.

Per cell: images/s (images answered with 200 over the time from the first request to the last answer), latency
p50/p95/p99 seen by the client, errors (answers other than 200 and failed connections), the service's peak RSS
(VmRSS of its process sampled every 0.5 s; VmHWM at the end of the run), and from GET /metrics (read
before and after the cell) the mean rows, requests and seconds per solver call and the share of the cell's wall
time the worker spent in solver calls. `--soak S` then runs a fresh `on` service for S seconds at `--soak-clients`
clients, sampling its VmRSS every `--soak-every` seconds, and reports first, last and peak RSS and the slope
(least squares, MB per minute) over the whole soak and over its second half. Only loopback traffic; every phase
is bounded in time and in requests, and the script stops by itself.

    .venv/bin/python benchmarks/serve_load.py --run /work/runs/digits --threads 1 --soak 300 \\
        --out docs/benchmarks/serve_load.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "on": ("batching on (defaults: --max-batch 64 --max-wait-ms 100 --eval-batch 32)", []),
    "off": ("batching off (--max-batch 1)", ["--max-batch", "1"]),
    "off-unpadded": ("batching off, whole-batch evaluation (--max-batch 1 --eval-batch 0)",
                     ["--max-batch", "1", "--eval-batch", "0"]),
    "on-unpadded": ("batching on, whole-batch evaluation (--eval-batch 0: no padding, no bitwise invariance)",
                    ["--eval-batch", "0"]),
}
DEFAULT_CONFIGS = ("on", "off", "off-unpadded")
CLIENTS = (1, 8, 32, 64)
READY_TIMEOUT_S = 180.0
CLIENT_TIMEOUT_S = 200.0  # above the service's own 120 s request timeout: the service answers 504 first
RSS_EVERY_S = 0.5
MB = 1024.0  # /proc reports kB


# -- the service ----------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid: int, key: str) -> float:
    """A `key` line (VmRSS, VmHWM) of /proc/PID/status, in kB; 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


class Service:
    """`noisecraft serve RUN ...` as a subprocess on a free loopback port, ready when started; stop() sends
    SIGTERM and waits."""

    def __init__(self, run: Path, extra: list[str], threads: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        cmd = [sys.executable, "-m", "noisecraft.cli", "serve", str(run), "--host", "127.0.0.1",
               "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read()[-chars:]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service was not ready after {timeout:g} s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples without labels (histogram sums and counts among them)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10.0).text
        return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z_]+) ([0-9.eE+-]+)$", text, re.MULTILINE)}

    def rss_mb(self) -> float:
        return proc_kb(self.pid, "VmRSS") / MB

    def peak_mb(self) -> float:
        return proc_kb(self.pid, "VmHWM") / MB

    def stop(self) -> int:
        """SIGTERM, then wait (the service finishes what it accepted); SIGKILL only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# -- the load -------------------------------------------------------------------------------------------------
@dataclass
class Load:
    """What the clients saw during one cell."""

    clients: int
    latencies: list[float] = field(default_factory=list)
    images: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        """The q-th percentile of the answered requests' latency (linear interpolation), in seconds."""
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        pos = (len(xs) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def _client(http: httpx.AsyncClient, url: str, load: Load, n: int, seeds: list[int], deadline: float,
                  max_requests: int) -> None:
    while time.monotonic() < deadline and len(seeds) < max_requests:
        seeds.append(len(seeds))
        start = time.monotonic()
        try:
            r = await http.post(f"{url}/sample", json={"n": n, "seed": 1000 * n + seeds[-1]})
            status = str(r.status_code)
        except httpx.HTTPError as err:
            status = type(err).__name__
        if status == "200":
            load.latencies.append(time.monotonic() - start)
            load.images += n
        else:
            load.errors[status] = load.errors.get(status, 0) + 1


async def _sample_rss(service: Service, load: Load, start: float, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        load.rss.append((time.monotonic() - start, service.rss_mb()))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    load.rss.append((time.monotonic() - start, service.rss_mb()))


async def _run_load(service: Service, clients: int, n: int, seconds: float, max_requests: int,
                    rss_every: float) -> Load:
    load, seeds, stop = Load(clients), [], asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        start = time.monotonic()
        sampler = asyncio.create_task(_sample_rss(service, load, start, rss_every, stop))
        await asyncio.gather(*(_client(http, service.url, load, n, seeds, start + seconds, max_requests)
                               for _ in range(clients)))
        load.wall = time.monotonic() - start
        stop.set()
        await sampler
    return load


def run_load(service: Service, clients: int, n: int, seconds: float, max_requests: int,
             rss_every: float = RSS_EVERY_S) -> Load:
    """`clients` closed-loop clients for `seconds` (at most `max_requests` requests in all), RSS sampled."""
    return asyncio.run(_run_load(service, clients, n, seconds, max_requests, rss_every))


# -- one configuration ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    config: str
    clients: int
    load: Load
    rows_per_batch: float
    requests_per_batch: float
    seconds_per_batch: float  # mean time of one solver call (the worker's compute, no HTTP)
    busy: float  # share of the wall time spent in solver calls

    @property
    def images_per_s(self) -> float:
        return self.load.images / self.load.wall if self.load.wall > 0 else 0.0


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def measure_cell(service: Service, config: str, clients: int, n: int, seconds: float, max_requests: int) -> Cell:
    """One configuration's service under `clients` clients, with its /metrics read before and after."""
    before = service.metrics()
    load = run_load(service, clients, n, seconds, max_requests)
    after = service.metrics()
    batches = _delta(after, before, "noisecraft_batch_rows_count")
    per_batch = {name: _delta(after, before, f"noisecraft_batch_{name}_sum") / batches if batches else float("nan")
                 for name in ("rows", "requests", "seconds")}
    busy = _delta(after, before, "noisecraft_batch_seconds_sum") / load.wall if load.wall else 0.0
    return Cell(config, clients, load, per_batch["rows"], per_batch["requests"], per_batch["seconds"], busy)


def measure(run: Path, configs: dict[str, list[str]], clients: tuple[int, ...], n: int, seconds: float,
            max_requests: int, threads: int | None) -> tuple[list[Cell], dict[str, float]]:
    """Every configuration at every client count, the configurations' cells interleaved (load on a shared machine
    that drifts during the run then reaches them alike): the cells and each service's VmHWM (MB). The services
    run side by side, only the one under test loaded."""
    services = {name: Service(run, extra, threads) for name, extra in configs.items()}
    cells, hwms = [], {}
    try:
        for service in services.values():
            service.wait_ready()
            for seed in range(2):  # warm-up: first calls allocate and pick kernels
                httpx.post(f"{service.url}/sample", json={"n": n, "seed": 10**9 + seed}, timeout=CLIENT_TIMEOUT_S)
        for k in clients:
            for name, service in services.items():
                cells.append(measure_cell(service, name, k, n, seconds, max_requests))
                print(row(cells[-1]), flush=True)
        hwms = {name: service.peak_mb() for name, service in services.items()}
    finally:
        for service in services.values():
            service.stop()
    order = list(configs)
    return sorted(cells, key=lambda c: (order.index(c.config), c.clients)), hwms


# -- the soak -------------------------------------------------------------------------------------------------
def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over time, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    ts, ys = [p[0] for p in points], [p[1] for p in points]
    t0, y0 = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - t0) ** 2 for t in ts)
    return 60 * sum((t - t0) * (y - y0) for t, y in zip(ts, ys, strict=True)) / var if var else float("nan")


def soak(run: Path, seconds: float, clients: int, n: int, every: float, threads: int | None) -> tuple[Load, float]:
    """A fresh `on` service under `clients` clients for `seconds`, its VmRSS sampled every `every` seconds."""
    service = Service(run, CONFIGS["on"][1], threads)
    try:
        service.wait_ready()
        httpx.post(f"{service.url}/sample", json={"n": n, "seed": 10**9}, timeout=CLIENT_TIMEOUT_S)
        load = run_load(service, clients, n, seconds, 10**7, every)
        hwm = service.peak_mb()
    finally:
        service.stop()
    return load, hwm


# -- the report -----------------------------------------------------------------------------------------------
HEADER = ("| configuration | clients | requests | images/s | p50 s | p95 s | p99 s | errors | peak RSS MB "
          "| rows / solver call | requests / call | s / call | worker busy |")
SOAK_HEADER = ("| requests | images/s | p50 s | p95 s | p99 s | errors | first RSS MB | last RSS MB | max RSS MB "
               "| VmHWM MB | slope MB/min (whole) | slope MB/min (2nd half) |")
RULE = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def _errors(load: Load) -> str:
    total = sum(load.errors.values())
    return str(total) if not total else f"{total} ({', '.join(f'{k}: {v}' for k, v in sorted(load.errors.items()))})"


def row(cell: Cell) -> str:
    load = cell.load
    peak = max((mb for _, mb in load.rss), default=float("nan"))
    return (f"| {cell.config} | {cell.clients} | {load.requests} | {cell.images_per_s:.1f} | {load.percentile(50):.3f} "
            f"| {load.percentile(95):.3f} | {load.percentile(99):.3f} | {_errors(load)} | {peak:.0f} "
            f"| {cell.rows_per_batch:.1f} | {cell.requests_per_batch:.1f} | {cell.seconds_per_batch:.3f} "
            f"| {cell.busy:.0%} |")


def _cell(cells: list[Cell], config: str, clients: int) -> Cell | None:
    return next((c for c in cells if c.config == config and c.clients == clients), None)


def _verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def ratio_lines(cells: list[Cell], busy_clients: int = 32) -> list[str]:
    """The targets of issue 19, read from the cells measured side by side."""
    out = []
    on = _cell(cells, "on", busy_clients)
    for anchor in ("off", "off-unpadded"):
        off = _cell(cells, anchor, busy_clients)
        if on is None or off is None or not off.images_per_s:
            continue
        speed = on.images_per_s / off.images_per_s
        p95_on, p95_off = on.load.percentile(95), off.load.percentile(95)
        out.append(f"- {busy_clients} clients, on / {anchor}: images/s **{speed:.2f}x** (target >= 3x: "
                   f"{_verdict(speed >= 3)}); p95 {p95_on:.3f} s against {p95_off:.3f} s "
                   f"(**{p95_on / p95_off:.2f}x**; target lower with batching: {_verdict(p95_on < p95_off)})")
    on1 = _cell(cells, "on", 1)
    for anchor in ("off", "off-unpadded"):
        off1 = _cell(cells, anchor, 1)
        if on1 is None or off1 is None:
            continue
        added = on1.load.percentile(50) / off1.load.percentile(50) - 1
        added95 = on1.load.percentile(95) / off1.load.percentile(95) - 1
        out.append(f"- 1 client, on against {anchor}: p50 latency {on1.load.percentile(50):.3f} s against "
                   f"{off1.load.percentile(50):.3f} s, **{added:+.1%}** (p95 {added95:+.1%}; target <= +10%: "
                   f"{_verdict(added <= 0.10)})")
    errors: dict[str, int] = {}
    for c in cells:
        errors[c.config] = errors.get(c.config, 0) + sum(c.load.errors.values())
    out.append("- errors: " + ", ".join(f"{k} {v}" for k, v in errors.items())
               + f" (target 0 with batching on: {_verdict(errors.get('on', 0) == 0)})")
    return out


def soak_lines(load: Load, hwm: float, seconds: float, clients: int, every: float) -> list[str]:
    points = load.rss
    half = [p for p in points if p[0] >= seconds / 2]
    first, last = points[0][1], points[-1][1]
    peak = max(mb for _, mb in points)
    whole, late = slope_mb_per_min(points), slope_mb_per_min(half)
    head = (f"Soak: a fresh `on` service, {clients} clients, {seconds:g} s, VmRSS every {every:g} s "
            f"({len(points)} samples).")
    cells = (f"| {load.requests} | {load.images / load.wall:.1f} | {load.percentile(50):.3f} "
             f"| {load.percentile(95):.3f} | {load.percentile(99):.3f} | {_errors(load)} | {first:.0f} | {last:.0f} "
             f"| {peak:.0f} | {hwm:.0f} | {whole:+.2f} | {late:+.2f} |")
    out = [head, "", SOAK_HEADER, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", cells, ""]
    step = max(1, len(points) // 12)
    trace = ", ".join(f"{t:.0f} s: {mb:.0f}" for t, mb in points[::step])
    out += [f"RSS trace (MB): {trace}.", ""]
    return out


def _versions() -> str:
    found = []
    for pkg in ("torch", "fastapi", "uvicorn", "httpx"):
        try:
            found.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def _cpu_model() -> str:
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found[1].strip() if found else platform.processor() or platform.machine()


def _load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def report(cells: list[Cell], hwms: dict[str, float], args: argparse.Namespace, command: str, load_before: str,
           soaked: tuple[Load, float] | None) -> str:
    machine = (f"`{command}` on {_cpu_model()}, {os.cpu_count()} CPUs, Linux, {date.today()}, Python "
               f"{platform.python_version()}, {_versions()}; run `{args.run}`. Service threads: "
               f"{args.threads or 'its own choice (torch default)'}; the clients run in the benchmark's process on "
               f"the same machine. Load average before the run: {load_before}; after: {_load_average()}.")
    what = (f"Each client sends POST /sample {{\"n\": {args.n}, \"seed\": s}} (the model's default solver, steps "
            f"and grid; PNG), the next one when the answer arrives, for {args.seconds:g} s (at most "
            f"{args.max_requests} requests per cell). Latency is the client's; rows / solver call, s / call (the "
            "worker's time per solver call) and worker busy (its share of the wall time) come from /metrics.")
    out = ["# Load test of `noisecraft serve`", "", machine, "", what, ""]
    for name, (what, _) in args.configs.items():
        out.append(f"- `{name}`: {what}; VmHWM {hwms.get(name, float('nan')):.0f} MB")
    out += ["", HEADER, RULE, *(row(c) for c in cells), "", "Targets (measured in this run):", *ratio_lines(cells), ""]
    if soaked is not None:
        out += soak_lines(soaked[0], soaked[1], args.soak, args.soak_clients, args.soak_every)
    return "\n".join(out) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _configs(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in names if v not in CONFIGS]
    if bad:
        raise argparse.ArgumentTypeError(f"expected configurations among {list(CONFIGS)}, got {text!r}")
    return names


def _extra(text: str) -> tuple[str, list[str]]:
    name, sep, options = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or name in CONFIGS:
        raise argparse.ArgumentTypeError(f"expected NAME='SERVE OPTIONS' with a new lower-case NAME, got {text!r}")
    return name, options.split()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the run directory served (e.g. /work/runs/digits, "
                                                           "made by `noisecraft demo`)")
    p.add_argument("--configs", type=_configs, default=DEFAULT_CONFIGS, help=f"among {', '.join(CONFIGS)}")
    p.add_argument("--extra", type=_extra, action="append", default=[],
                   help="another configuration, NAME='SERVE OPTIONS' (e.g. wait50='--max-wait-ms 50'); repeatable")
    p.add_argument("--clients", type=_ints, default=CLIENTS, help="concurrent clients, e.g. 1,8,32,64")
    p.add_argument("--n", type=int, default=4, help="images per request (e.g. 1 or 4)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of load per cell")
    p.add_argument("--max-requests", type=int, default=5000, help="most requests per cell")
    p.add_argument("--threads", type=int, default=None, help="the service's OMP_NUM_THREADS (default: inherited)")
    p.add_argument("--soak", type=float, default=0.0, help="seconds of soak at --soak-clients (0: none)")
    p.add_argument("--soak-clients", type=int, default=32)
    p.add_argument("--soak-every", type=float, default=5.0, help="seconds between RSS samples in the soak")
    p.add_argument("--smoke", action="store_true", help="a tiny run: `on` only, 1 and 2 clients, 1 s each, n 1, "
                                                        "no soak")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = p.parse_args(argv)
    if args.smoke:
        args.configs, args.clients, args.n, args.seconds, args.max_requests = ("on",), (1, 2), 1, 1.0, 20
        args.soak = 0.0
    args.configs = {name: CONFIGS[name] for name in args.configs}
    args.configs.update({name: (f"`noisecraft serve {' '.join(options)}`", options) for name, options in args.extra})
    if not args.configs:
        p.error("no configuration to measure; expected --configs or --extra")
    if not args.run.is_dir():
        p.error(f"--run {args.run} is not a directory; expected a run (e.g. made by `noisecraft demo`)")
    if args.n < 1 or args.seconds <= 0 or args.max_requests < 1 or args.soak < 0 or args.soak_every <= 0:
        p.error("--n and --max-requests must be >= 1, --seconds and --soak-every > 0, --soak >= 0")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    command = "python benchmarks/serve_load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    load_before = _load_average()
    print(HEADER + "\n" + RULE, flush=True)
    cells, hwms = measure(args.run, {name: options for name, (_, options) in args.configs.items()}, args.clients,
                          args.n, args.seconds, args.max_requests, args.threads)
    soaked = None
    if args.soak:
        print(f"soak: {args.soak:g} s at {args.soak_clients} clients...", flush=True)
        soaked = soak(args.run, args.soak, args.soak_clients, args.n, args.soak_every, args.threads)
    text = report(cells, hwms, args, command, load_before, soaked)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated benchmark still stops its service
    main()
