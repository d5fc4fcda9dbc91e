"""password-generator HTTP API: ``POST /v1/passwords``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.faults import FaultPoints
from metallica.password_generator.service import PasswordService
from metallica.password_generator.settings import GeneratorSettings
from metallica.threads import in_thread
from metallica.web.app import authenticated, database_check, migrated_database, service_app
from metallica.web.faults import fault_routes
from metallica.web.requests import idempotency_key, json_object, string_field

FAULT_POINTS = ("before_persist", "during_persist", "after_persist")


def create_app(settings: GeneratorSettings) -> Starlette:
    faults = FaultPoints(FAULT_POINTS, enabled=settings.faults_enabled)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with migrated_database(
            settings.database_url,
            "generator",
            settings.database_timeouts,
            settings.database_pool_size,
        ) as database:
            app.state.service = PasswordService(database, settings.policy, faults=faults)
            app.state.readiness_checks = {"database": database_check(database)}
            yield

    async def create_password(request: Request) -> Response:
        key = idempotency_key(request)
        body = await json_object(request, fields=("username",))
        username = string_field(body, "username")
        assert username is not None
        service: PasswordService = request.app.state.service
        created = await in_thread(service.create, key, username)
        return JSONResponse({"username": created.username, "password": created.password}, 201)

    token = settings.api_token
    routes = [
        Route("/v1/passwords", authenticated(token, create_password), methods=["POST"]),
        *fault_routes(token, faults),
    ]
    return service_app("generator", routes, lifespan, max_in_flight=settings.max_in_flight)
