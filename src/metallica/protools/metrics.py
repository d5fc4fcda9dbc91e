"""protools' own metrics, beside every service's HTTP ones (:mod:`metallica.web.metrics`):
calls and retries per service, parked steps, workflows, the breakers, the adaptive limits, the
retry budgets, the admission queue (length, whether it stands, time queued), and the outbox
(depth, age of the oldest message). Refusals by reason are the shared ``metallica_shed``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from metallica.overload.breaker import STATE_CODES
from metallica.overload.queue import Ticket
from metallica.protools.flow import Admission, DownstreamGuard
from metallica.protools.subscriptions import GroupView
from metallica.protools.tailer import LogTailer
from metallica.storage.group_commit import GroupCommit
from metallica.web.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

# Seconds: from a burst served in a few milliseconds to a command that waited out its patience.
QUEUED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class ProtoolsMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("protools")
        registry = self.registry
        self.calls = Counter(
            "metallica_downstream_calls",
            "Calls made to a service, first attempts and retries apart.",
            ["downstream", "attempt"],
            registry=registry,
        )
        self.retries = Counter(
            "metallica_retries",
            "Attempts that did not settle their step and will be tried again, by cause.",
            ["downstream", "cause"],
            registry=registry,
        )
        self.parked = Counter(
            "metallica_parked",
            "Attempts held back without a call, by reason "
            "(circuit-open, retry-budget, concurrency-limit).",
            ["downstream", "reason"],
            registry=registry,
        )
        self.workflows = Counter(
            "metallica_workflows",
            "Workflows this replica started, and those it saw complete or fail.",
            ["status"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "metallica_outbox_messages",
            "Messages in the outbox (calls in flight, due, or parked), as last read.",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "metallica_outbox_oldest_age_seconds",
            "Age of the oldest message in the outbox, as last read.",
            registry=registry,
        )
        self._breaker_state = Gauge(
            "metallica_breaker_state",
            "Circuit breaker per service: 0 closed, 1 half-open, 2 open.",
            ["downstream"],
            registry=registry,
        )
        self._limit = Gauge(
            "metallica_concurrency_limit",
            "Adaptive concurrency limit: admission of new workflows, or calls to a service.",
            ["scope"],
            registry=registry,
        )
        self._in_use = Gauge(
            "metallica_concurrency_in_use",
            "Permits of each adaptive limit in use.",
            ["scope"],
            registry=registry,
        )
        self._queue_length = Gauge(
            "metallica_admission_queue_length",
            "New commands waiting for a place under the admission limit.",
            registry=registry,
        )
        self._queue_standing = Gauge(
            "metallica_admission_queue_standing",
            "1 while the admission queue stands (CoDel: it sheds), else 0.",
            registry=registry,
        )
        self._queued = Histogram(
            "metallica_admission_queued_seconds",
            "Time a new command that found no free place waited in the admission queue, by "
            "what became of it (admitted, refused, cancelled: its client left).",
            ["outcome"],
            buckets=QUEUED_BUCKETS,
            registry=registry,
        )
        self.followers_ended = Counter(
            "metallica_log_followers_ended",
            "Streams of the log this replica ended, by reason (slow-reader, send-timeout, "
            "shutting-down, client-left).",
            ["reason"],
            registry=registry,
        )
        self._budget = Gauge(
            "metallica_retry_budget_available",
            "Retries the budget of each service would allow now.",
            ["downstream"],
            registry=registry,
        )

    def watch_log(self, tailer: LogTailer) -> None:
        """The log's gauges, read from this replica's tailer at each scrape."""
        gauges = (
            (
                "metallica_log_position",
                "The last log position this replica's tailer handed to "
                "its followers (0 while nobody follows).",
                lambda: float(tailer.position or 0),
            ),
            (
                "metallica_log_lag_seconds",
                "How far behind the newest event this replica's "
                "tailer is, in seconds (0 when it has read everything).",
                lambda: tailer.lag_seconds,
            ),
            (
                "metallica_log_oldest_write_seconds",
                "How long the oldest open write transaction "
                "of the database has been open: one that holds the log's turn holds every writer.",
                lambda: tailer.oldest_write_seconds,
            ),
            (
                "metallica_log_followers",
                "Streams following the log on this replica.",
                lambda: float(tailer.followers),
            ),
            (
                "metallica_log_waiting_pulls",
                "Consumer groups' pulls waiting for events on this replica.",
                lambda: float(tailer.waiting_pulls),
            ),
        )
        for name, documentation, read in gauges:
            Gauge(name, documentation, registry=self.registry).set_function(read)

    def watch_writer(self, writer: GroupCommit) -> None:
        """The hot path's group commit: its batches and the use cases they carried."""
        self.registry.register(WriterCollector(writer))

    def watch_groups(self, read: Callable[[], list[GroupView]]) -> None:
        """The consumer groups' metrics, read from the database at each scrape (every replica
        tells the same, since groups are shared)."""
        self.registry.register(GroupsCollector(read))

    def watch(self, admission: Admission, guards: Mapping[str, DownstreamGuard]) -> None:
        """Read the live values at each scrape."""
        self._limit.labels("admission").set_function(lambda: admission.limiter.limit)
        self._in_use.labels("admission").set_function(lambda: admission.limiter.in_flight)
        self._queue_length.set_function(lambda: admission.queue.length)
        self._queue_standing.set_function(lambda: float(admission.queue.standing))
        admission.on_decided = self.queued
        for name, guard in guards.items():
            self._watch_guard(name, guard)

    def queued(self, ticket: Ticket) -> None:
        """A queued command's fate: how long it waited, by outcome."""
        self._queued.labels(ticket.state).observe(ticket.waited)

    def _watch_guard(self, name: str, guard: DownstreamGuard) -> None:
        self._limit.labels(name).set_function(lambda: guard.limiter.limit)
        self._in_use.labels(name).set_function(lambda: guard.limiter.in_flight)
        self._budget.labels(name).set_function(lambda: guard.budget.available)
        self._breaker_state.labels(name).set_function(lambda: STATE_CODES[guard.breaker.state])


class WriterCollector:
    """The group commit's transactions and the use cases they carried (their ratio is the
    mean batch: the use cases that shared one commit)."""

    def __init__(self, writer: GroupCommit) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        batches = CounterMetricFamily(
            "metallica_commit_batches",
            "Transactions the hot path's group commit wrote (each one commit, one flush).",
        )
        batches.add_metric([], self.writer.batches)
        units = CounterMetricFamily(
            "metallica_commit_units",
            "Use cases (accepts, attempt outcomes) those transactions carried.",
        )
        units.add_metric([], self.writer.units)
        return iter((batches, units))


class GroupsCollector:
    """Each consumer group's lag (positions and seconds), events in flight, parked events and
    redeliveries, as the database has them when scraped."""

    def __init__(self, read: Callable[[], list[GroupView]]) -> None:
        self.read = read

    def _families(
        self,
    ) -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
    ]:
        labels = ["group"]
        return (
            GaugeMetricFamily(
                "metallica_subscription_lag_positions",
                "Positions from the group's oldest unfinished event to the log's head.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "metallica_subscription_lag_seconds",
                "Age of the group's oldest unfinished event (0 when it has finished all).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "metallica_subscription_in_flight",
                "Events leased to the group's members now.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "metallica_subscription_parked",
                "Events the group parked after their last allowed delivery.",
                labels=labels,
            ),
            CounterMetricFamily(
                "metallica_subscription_redeliveries",
                "Events the group delivered again (a lease ran out, or a nack).",
                labels=labels,
            ),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        lag, age, in_flight, parked, redeliveries = families = self._families()
        try:
            views = self.read()
        except Exception:  # a scrape while the database is away: the groups are left out
            logger.warning("metallica.group_metrics_unread", exc_info=True)
            views = []
        for view in views:
            labels = [view.name]
            lag.add_metric(labels, view.lag_positions)
            age.add_metric(labels, view.lag_seconds)
            in_flight.add_metric(labels, view.in_flight)
            parked.add_metric(labels, view.parked)
            redeliveries.add_metric(labels, view.redeliveries)
        return iter(families)
