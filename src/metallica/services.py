"""The services Metallica is made of, in one place: their names, how each one's app is built
from configuration, and the database schema each keeps (one PostgreSQL schema per service).

``metallica serve``, ``metallica up``, the lab and the bench look services up here; nothing
outside the CLI imports the CLI. The imports of each service happen when it is built, so that
naming the services costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from metallica.config import CALLEE_NAMES, GENERATOR, MAILER, PROTOOLS, SERVICE_NAMES

# The three services, in the order they are listed; protools' callees (named in metallica.config,
# which the services read too).
NAMES = SERVICE_NAMES
CALLEES = CALLEE_NAMES


@dataclass(frozen=True)
class Service:
    """``build`` makes the service's ASGI app from configuration values (keys as
    :attr:`metallica.config.Setting.key`), raising :class:`metallica.config.ConfigError` for
    anything missing or wrong; ``document`` its OpenAPI document (what it serves at
    ``/openapi.json``)."""

    name: str
    build: Callable[[Mapping[str, Any]], Any]
    document: Callable[[], dict[str, Any]]


def _protools(options: Mapping[str, Any]) -> Any:
    from metallica.protools.http import create_app
    from metallica.protools.settings import ProtoolsSettings

    return create_app(ProtoolsSettings.from_options(options))


def _generator(options: Mapping[str, Any]) -> Any:
    from metallica.password_generator.http import create_app
    from metallica.password_generator.settings import GeneratorSettings

    return create_app(GeneratorSettings.from_options(options))


def _mailer(options: Mapping[str, Any]) -> Any:
    from metallica.mail_sender.http import create_app
    from metallica.mail_sender.settings import MailerSettings

    return create_app(MailerSettings.from_options(options))


def _protools_document() -> dict[str, Any]:
    from metallica.protools.openapi import openapi_document

    return openapi_document()


def _generator_document() -> dict[str, Any]:
    from metallica.password_generator.openapi import openapi_document

    return openapi_document()


def _mailer_document() -> dict[str, Any]:
    from metallica.mail_sender.openapi import openapi_document

    return openapi_document()


SERVICES: dict[str, Service] = {
    PROTOOLS: Service(PROTOOLS, _protools, _protools_document),
    GENERATOR: Service(GENERATOR, _generator, _generator_document),
    MAILER: Service(MAILER, _mailer, _mailer_document),
}


def build_app(name: str, options: Mapping[str, Any]) -> Any:
    """The ASGI app of service ``name`` from configuration values."""
    return SERVICES[name].build(options)


def schema_urls(server_url: str, prefix: str = "") -> dict[str, str]:
    """One PostgreSQL schema per service, ``<prefix><service>``, in the database of
    ``server_url`` (created if missing): each service's database URL."""
    from metallica.storage.postgres import ensure_schema, schema_url

    urls = {}
    for name in NAMES:
        ensure_schema(server_url, prefix + name)
        urls[name] = schema_url(server_url, prefix + name)
    return urls


def drop_schemas(server_url: str, prefix: str) -> None:
    """Drop the schemas :func:`schema_urls` made with ``prefix``."""
    from metallica.storage.postgres import drop_schema

    for name in NAMES:
        drop_schema(server_url, prefix + name)
