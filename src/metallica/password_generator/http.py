"""password-generator HTTP API: ``POST /v1/passwords``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.faults import FaultPoints
from metallica.password_generator.openapi import openapi_document
from metallica.password_generator.service import PasswordService
from metallica.password_generator.settings import GeneratorSettings
from metallica.threads import in_thread
from metallica.web.app import authenticated, database_check, migrated_database, service_app
from metallica.web.faults import fault_routes
from metallica.web.requests import idempotency_key, json_object, string_field

FAULT_POINTS = ("before_persist", "during_persist", "after_persist")

logger = logging.getLogger(__name__)


def create_app(settings: GeneratorSettings) -> Starlette:
    faults = FaultPoints(FAULT_POINTS, enabled=settings.faults_enabled)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with migrated_database(
            settings.database_url,
            "generator",
            settings.database_timeouts,
            settings.database_pool_size,
            migrate_at_start=settings.migrate_at_start,
        ) as database:
            service = PasswordService(
                database,
                settings.policy,
                settings.keys,
                retention=settings.retention,
                faults=faults,
            )
            await in_thread(service.seal_legacy_rows)  # rows from before the digests, if any
            app.state.service = service
            app.state.readiness_checks = {"database": database_check(database)}
            sweeping = asyncio.create_task(_sweep(service, settings.sweep_interval))
            try:
                yield
            finally:
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping

    async def create_password(request: Request) -> Response:
        key = idempotency_key(request)
        body = await json_object(request, fields=("username",))
        username = string_field(body, "username")
        assert username is not None
        service: PasswordService = request.app.state.service
        created = await in_thread(service.create, key, username)
        return JSONResponse({"username": created.username, "password": created.password}, 201)

    token = settings.credentials
    routes = [
        Route("/v1/passwords", authenticated(token, create_password), methods=["POST"]),
        *fault_routes(token, faults),
    ]
    return service_app(
        "generator",
        routes,
        lifespan,
        max_in_flight=settings.max_in_flight,
        openapi=openapi_document(),
    )


async def _sweep(service: PasswordService, interval: float) -> None:
    """Drop the sealed copies of expired idempotency records, now and every ``interval`` s."""
    while True:
        try:
            await in_thread(service.expire_sealed_copies)
        except Exception as error:  # the next round tries again; the hot path is not affected
            logger.warning(
                "metallica.generator.sweep_failed",
                extra={"error": getattr(error, "code", type(error).__name__)},
            )
        await asyncio.sleep(interval)
