"""protools' own metrics, beside every service's HTTP ones (:mod:`metallica.web.metrics`):
calls and retries per service, parked steps, workflows, the breakers, the adaptive limits, the
retry budgets, and the outbox (depth, age of the oldest message)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

from metallica.overload.breaker import STATE_CODES
from metallica.protools.flow import Admission, DownstreamGuard
from metallica.web.metrics import ServiceMetrics


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
        self._budget = Gauge(
            "metallica_retry_budget_available",
            "Retries the budget of each service would allow now.",
            ["downstream"],
            registry=registry,
        )

    def watch(self, admission: Admission, guards: Mapping[str, DownstreamGuard]) -> None:
        """Read the live values at each scrape."""
        self._limit.labels("admission").set_function(lambda: admission.limiter.limit)
        self._in_use.labels("admission").set_function(lambda: admission.limiter.in_flight)
        for name, guard in guards.items():
            self._watch_guard(name, guard)

    def _watch_guard(self, name: str, guard: DownstreamGuard) -> None:
        self._limit.labels(name).set_function(lambda: guard.limiter.limit)
        self._in_use.labels(name).set_function(lambda: guard.limiter.in_flight)
        self._budget.labels(name).set_function(lambda: guard.budget.available)
        self._breaker_state.labels(name).set_function(lambda: STATE_CODES[guard.breaker.state])
