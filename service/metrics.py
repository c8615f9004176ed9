"""Prometheus metrics for `corrbot run`, off unless ``[metrics] listen = "127.0.0.1:9464"``.

The runner reports what each poll cycle and delivery round did; this module only counts.
Its own registry (not prometheus_client's global one), so two services in one test process,
or a library that registers its own metrics, never collide. The exporter is
prometheus_client's HTTP server on a daemon thread: a scrape never touches the event loop
or the database (the numbers are set from the loop when cycles and rounds finish).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from core.errors import ConfigError
from feeds.base import FeedResult

_CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_EVAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.polls = Counter("corrbot_polls", "Poll cycles finished, by outcome", ["outcome"], registry=r)
        self.feed_errors = Counter("corrbot_feed_errors", "Failed fetches (asset x timeframe), by source",
                                   ["source"], registry=r)
        self.bars = Counter("corrbot_bars_stored", "Bars inserted or updated, by source", ["source"], registry=r)
        self.cycle_seconds = Histogram("corrbot_cycle_seconds", "Wall time of a whole poll cycle",
                                       buckets=_CYCLE_BUCKETS, registry=r)
        self.eval_seconds = Histogram("corrbot_evaluation_seconds", "Wall time of one alert-rule evaluation",
                                      buckets=_EVAL_BUCKETS, registry=r)
        self.alerts = Counter("corrbot_alerts", "Alert transitions, by kind", ["kind"], registry=r)
        self.sent = Counter("corrbot_messages_sent", "Outbox rows Telegram (or the console) accepted", registry=r)
        self.delivery_failures = Counter(
            "corrbot_delivery_failures", "Outbox rows retried later or given up on", ["kind"], registry=r)
        self.backlog = Gauge("corrbot_outbox_pending", "Outbox rows waiting to be sent", registry=r)
        self.last_cycle = Gauge("corrbot_last_cycle_timestamp_seconds",
                                "Unix time the last poll cycle finished (ok or not)", registry=r)
        for outcome in ("ok", "failed"):  # zero series exist from the start: rate() needs them
            self.polls.labels(outcome)
        for kind in ("fired", "resolved"):
            self.alerts.labels(kind)
        for kind in ("retried", "failed"):
            self.delivery_failures.labels(kind)
        self._server: object | None = None

    def feeds(self, results: Iterable[FeedResult]) -> None:
        for res in results:
            if res.error:
                self.feed_errors.labels(res.source).inc()
            elif res.inserted or res.updated:
                self.bars.labels(res.source).inc(res.inserted + res.updated)

    def cycle(self, *, ok: bool, seconds: float, now: float) -> None:
        self.polls.labels("ok" if ok else "failed").inc()
        self.cycle_seconds.observe(seconds)
        self.last_cycle.set(now)

    def evaluation(self, *, fired: int, resolved: int, seconds: float) -> None:
        self.alerts.labels("fired").inc(fired)
        self.alerts.labels("resolved").inc(resolved)
        self.eval_seconds.observe(seconds)

    def delivery(self, *, sent: int, retried: int, failed: int, pending: int) -> None:
        self.sent.inc(sent)
        self.delivery_failures.labels("retried").inc(retried)
        self.delivery_failures.labels("failed").inc(failed)
        self.backlog.set(pending)

    def serve(self, listen: str) -> None:
        """Start the exporter on ``host:port`` (checked by the config model)."""
        host, _, port = listen.rpartition(":")
        try:
            server, _thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ConfigError(f"cannot listen on {listen} ({why})", "metrics.listen") from None
        self._server = server

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
