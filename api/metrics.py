"""Prometheus metrics: request counts and latencies per route, prediction cache hits and
misses, catalog size.

Each app has its own registry. Under gunicorn (``sonicsort serve``) every worker writes its
numbers to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them over the workers, so a
scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def server_timing(elapsed_s: float) -> str:
    """The time spent in the app, for clients and benchmarks (W3C Server-Timing)."""
    return f"app;dur={elapsed_s * 1000:.3f}"


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sonicsort_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("sonicsort_http_request_duration_seconds", "time to answer a request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.predictions = Counter("sonicsort_predictions", "predictions of uploaded audio, by cache result",
                                   ["cache"], registry=r)
        self.tracks = Gauge("sonicsort_catalog_tracks", "tracks in the catalog", registry=r,
                            multiprocess_mode="livemax")
        self.ready = Gauge("sonicsort_ready", "1 when the worker has its model and index loaded", registry=r,
                           multiprocess_mode="livemin")
        self.cache_up = Gauge("sonicsort_cache_up", "1 when the prediction cache (Redis) answers", registry=r,
                              multiprocess_mode="livemin")

    def init_app(self, app: Flask) -> None:
        app.extensions["sonicsort_metrics"] = self
        self._states_at = 0.0
        service = app.extensions["sonicsort"]
        service.on_started(lambda: self._set_states(service))

        @app.before_request
        def _start_timer():
            g._t0 = time.perf_counter()

        @app.after_request
        def _observe(resp: Response):
            t0 = g.pop("_t0", None)
            if t0 is not None:
                elapsed = time.perf_counter() - t0
                resp.headers["Server-Timing"] = server_timing(elapsed)
                route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
                self.observe(request.method, route, resp.status_code, elapsed)
                if t0 - self._states_at > 1.0:  # every worker reports its own state, once a second at most
                    self._states_at = t0
                    self._set_states(app.extensions["sonicsort"])
            return resp

    def observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        """One answered request, in the per-route counts and latencies."""
        self.latency.labels(method, route).observe(elapsed_s)
        self.requests.labels(method, route, str(status)).inc()

    def _set_states(self, service) -> None:
        self.ready.set(1 if service.state == "ready" else 0)
        self.cache_up.set(1 if service.cache.state() in ("ok", "memory") else 0)

    def exposition(self, service) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        try:
            self.tracks.set(len(service.catalog))
        except Exception:  # an unreadable catalog shows on /readyz; metrics still answer
            pass
        self._set_states(service)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST
