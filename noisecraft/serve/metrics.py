"""The service's Prometheus metrics (prometheus_client), in a registry of its own so that two services in one
process (tests) do not share counters: requests by endpoint and status, latency, merged batch sizes, queue
depth."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("noisecraft_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("noisecraft_request_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("noisecraft_batch_rows", "rows drawn per solver call", buckets=ROW_BUCKETS,
                                    registry=self.registry)
        self.batch_requests = Histogram("noisecraft_batch_requests", "requests merged per solver call",
                                        buckets=ROW_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("noisecraft_batch_seconds", "time of one merged solver call",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        queue = Gauge("noisecraft_queue_depth", "requests waiting or running", registry=self.registry)
        queue.set_function(depth)

    def on_batch(self, rows: int, jobs: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(jobs)
        self.batch_seconds.observe(seconds)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics"]
