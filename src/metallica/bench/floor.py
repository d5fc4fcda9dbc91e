"""The floor: the password workflow with no durability at all, on protools' own HTTP stack.

It answers protools' create endpoint by awaiting the generator's call, then the mailer's, and
returning the password: no event, no outbox, no command store, no retry. It uses the same
server (:func:`metallica.web.app.service_app`) and the same pooled clients
(:class:`metallica.protools.clients.ServiceClients`) as protools, against the same services, so
``metallica bench --floor`` measures what durability costs, and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica import config
from metallica.config import default, value
from metallica.errors import ServiceUnavailable
from metallica.protools import engine, password_workflow
from metallica.protools.clients import ServiceClients
from metallica.web.app import authenticated, service_app
from metallica.web.requests import idempotency_key, json_object


@dataclass(frozen=True)
class FloorSettings:
    api_token: str
    generator_urls: tuple[str, ...]
    mailer_urls: tuple[str, ...]
    service_token: str = ""  # towards the generator and the mailer ("": api_token)
    mail_domain: str = default("mail-domain")
    call_timeout: float = default("call-timeout")
    connect_timeout: float = default("connect-timeout")
    concurrency: int = default("relay-concurrency")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FloorSettings:
        """From the same configuration values as protools' (those the floor reads)."""
        return cls(
            api_token=config.require(options, "api-token"),
            service_token=options.get("service_token") or "",
            generator_urls=config.urls(options, "generator-urls"),
            mailer_urls=config.urls(options, "mailer-urls"),
            mail_domain=value(options, "mail-domain"),
            call_timeout=value(options, "call-timeout"),
            connect_timeout=value(options, "connect-timeout"),
            concurrency=value(options, "relay-concurrency"),
        )


def create_app(settings: FloorSettings) -> Starlette:
    definition = password_workflow.definition(deadline_seconds=60, retry=engine.RetryPolicy())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients = ServiceClients(
            {"generator": settings.generator_urls, "mailer": settings.mailer_urls},
            token=settings.service_token or settings.api_token,
            connect_timeout=settings.connect_timeout,
            call_timeout=settings.call_timeout,
            max_connections=settings.concurrency,
        )
        app.state.clients = clients
        app.state.readiness_checks = {}
        try:
            yield
        finally:
            await clients.aclose()

    async def create_password(request: Request) -> Response:
        idempotency_key(request)
        command = definition.parse(await json_object(request))
        clients: ServiceClients = request.app.state.clients
        state = engine.WorkflowState(str(uuid.uuid4()), input=command.input)
        for step in definition.steps:
            call = step.request(state)
            _, answer = await clients.send(call, 1)
            outcome = step.interpret(answer) if isinstance(answer, engine.Response) else answer
            if not isinstance(outcome, engine.Succeeded):
                raise ServiceUnavailable(f"{step.name}: {outcome}")
            state = engine.WorkflowState(
                state.workflow_id,
                input=state.input,
                results={**state.results, step.name: outcome.result},
            )
        body = {"workflow_id": state.workflow_id, "status": "completed"}
        return JSONResponse(body | definition.result(state))

    routes = [
        Route(
            "/v1/workflows/password-creation",
            authenticated(settings.api_token, create_password),
            methods=["POST"],
        )
    ]
    return service_app("floor", routes, lifespan, max_in_flight=100_000)  # it never sheds
