"""Prometheus metrics of one server: its own registry, so two apps in a process never mix."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Requests by endpoint and status, latency, batch sizes, queue depth, generation speed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tensorsmith_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tensorsmith_request_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "tensorsmith_batch_size",
            "rows in one forward pass of predict",
            ["model"],
            buckets=_BATCH,
            registry=r,
        )
        self.decode_batch = Histogram(
            "tensorsmith_decode_batch_size",
            "sequences in one decoding step",
            ["model"],
            buckets=_BATCH,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tensorsmith_queue_depth", "requests waiting for a model", ["model"], registry=r
        )
        self.first_token = Histogram(
            "tensorsmith_time_to_first_token_seconds",
            "from request to first token",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "tensorsmith_tokens_per_second",
            "generated tokens per second of one completion",
            ["model"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
            registry=r,
        )
        self.tokens = Counter(
            "tensorsmith_generated_tokens", "tokens generated", ["model"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
