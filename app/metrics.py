"""Prometheus metrics, one registry per application instance (several apps can live in one test process).

With several server workers (`corral serve --workers N`), each worker counts in its own process: the CLI then
points PROMETHEUS_MULTIPROC_DIR at a directory of its own before the workers start, every worker writes its
values there, and whichever worker a scrape reaches adds them all up (prometheus_client's multiprocess mode).
Counters of a worker that died stay counted, so Prometheus never sees a counter go back.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "corral_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "corral_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

        self.claim_wait = Histogram(
            "corral_queue_claim_wait_seconds",
            "From a job becoming claimable to its claim.",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
        )
        # Set from the database by the worker a scrape reaches: across workers the most recent value stands.
        self.jobs = Gauge(
            "corral_queue_jobs",
            "Evaluation jobs by state.",
            ["state"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.runners = Gauge(
            "corral_runners",
            "Registered runners by state and whether online.",
            ["state", "online"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per series: labels() costs more than the increment.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        if MULTIPROCESS_DIRECTORY in os.environ:
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # all workers, added up
            return generate_latest(combined)
        return generate_latest(self.registry)
