"""Prometheus metrics: request counts and latency by route, run counts and durations by technique."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("atlas_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("atlas_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.runs = Counter("atlas_runs_total", "mechanism runs", ["technique"], registry=self.registry)
        self.run_seconds = Histogram("atlas_run_forward_seconds", "forward-pass time of runs", ["technique"],
                                     registry=self.registry,
                                     buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_run(self, technique: str, seconds: float) -> None:
        self.runs.labels(technique).inc()
        self.run_seconds.labels(technique).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
