"""mail-sender HTTP API: ``POST /v1/mails``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metallica.faults import FaultPoints
from metallica.mail_sender.maildir import Maildir
from metallica.mail_sender.openapi import openapi_document
from metallica.mail_sender.service import MailService
from metallica.mail_sender.settings import MailerSettings
from metallica.threads import in_thread
from metallica.web.app import authenticated, database_check, migrated_database, service_app
from metallica.web.faults import fault_routes
from metallica.web.requests import idempotency_key, json_object, string_field

FAULT_POINTS = ("before_write", "after_write")


def create_app(settings: MailerSettings) -> Starlette:
    faults = FaultPoints(FAULT_POINTS, enabled=settings.faults_enabled)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with migrated_database(
            settings.database_url,
            "mailer",
            settings.database_timeouts,
            settings.database_pool_size,
            migrate_at_start=settings.migrate_at_start,
        ) as database:
            maildir = Maildir(settings.maildir)
            maildir.clean_tmp()
            app.state.service = MailService(
                database, maildir, sender=settings.sender, faults=faults
            )
            app.state.readiness_checks = {"database": database_check(database)}
            yield

    async def send_mail(request: Request) -> Response:
        key = idempotency_key(request)
        body = await json_object(request, fields=("to", "subject", "body"))
        to, subject, text = (string_field(body, name) for name in ("to", "subject", "body"))
        assert to is not None
        assert subject is not None
        assert text is not None
        service: MailService = request.app.state.service
        mail_id, _ = await in_thread(service.send, key, to, subject, text)
        return JSONResponse({"id": mail_id}, 202)

    token = settings.credentials
    routes = [
        Route("/v1/mails", authenticated(token, send_mail), methods=["POST"]),
        *fault_routes(token, faults),
    ]
    return service_app(
        "mailer",
        routes,
        lifespan,
        max_in_flight=settings.max_in_flight,
        openapi=openapi_document(),
    )
