"""The settings table is the one source: the README's table, `serve`'s flags and the Settings'
defaults all come from it, and a setting's value is checked where the service is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from metallica import config
from metallica.cli import main
from metallica.config import SETTINGS, ConfigError
from metallica.mail_sender.settings import MailerSettings
from metallica.overload.queue import QueueSettings
from metallica.password_generator.settings import GeneratorSettings
from metallica.protools.flow import FlowSettings
from metallica.protools.settings import ProtoolsSettings
from metallica.sealing import new_entry
from metallica.storage import Timeouts

README = Path(__file__).parents[2] / "README.md"
START, END = "<!-- settings table", "<!-- end of the settings table -->"


def test_the_readme_table_is_the_settings_table() -> None:
    text = README.read_text()
    begin = text.index("\n", text.index(START)) + 1
    found = text[begin : text.index(END)]
    assert found == config.markdown_table(), (
        "README.md's configuration table differs from src/metallica/config.py: paste the "
        "output of `python -m metallica.config` between its markers"
    )


def test_every_setting_is_a_flag_of_serve_with_its_variable_and_default() -> None:
    serve = main.commands["serve"]
    assert isinstance(serve, click.Command)
    flags = {
        name: parameter
        for parameter in serve.params
        if isinstance(parameter, click.Option)
        for name in parameter.opts
    }
    for setting in SETTINGS:
        option = flags[f"--{setting.name}"]
        assert option.envvar == setting.variable
        assert option.default == setting.default, setting.name


@pytest.mark.parametrize(
    ("settings", "fields"),
    [
        (
            ProtoolsSettings("sqlite:///x.db", "t", ("http://g",), ("http://m",)),
            {"call_timeout": "call-timeout", "wait_max": "wait-max", "mail_domain": "mail-domain"},
        ),
        (FlowSettings(), {"admission_limit": "admission-limit", "client_rate": "client-rate"}),
        (
            QueueSettings(),
            {"target": "admission-queue-target", "max_length": "admission-queue-max"},
        ),
        (Timeouts(), {"lock": "db-lock-timeout", "idle_in_transaction": "db-idle-timeout"}),
        (GeneratorSettings("sqlite:///x.db", "t"), {"retention": "idempotency-retention"}),
        (MailerSettings("sqlite:///x.db", "t", Path("m")), {"sender": "mail-from"}),
    ],
)
def test_the_settings_defaults_are_the_tables(settings: Any, fields: dict[str, str]) -> None:
    for field, name in fields.items():
        assert getattr(settings, field) == config.default(name)


def test_a_dataclass_field_named_after_a_setting_has_its_default() -> None:
    # Any field of a Settings class whose name is a setting's takes the table's default: a
    # literal written again in a dataclass would drift from the README.
    keys = {setting.key: setting for setting in SETTINGS}
    for cls in (ProtoolsSettings, FlowSettings, GeneratorSettings, MailerSettings):
        for field in dataclasses.fields(cls):
            if field.name in keys and field.default is not dataclasses.MISSING:
                expected = keys[field.name].default
                unset = expected is None and not field.default  # no value: None, "" or {}
                assert unset or field.default == expected, (cls.__name__, field.name)


def _protools(**overrides: Any) -> dict[str, Any]:
    return {
        "database_url": "sqlite:///x.db",
        "api_token": "t",
        "generator_urls": "http://127.0.0.1:9, http://127.0.0.1:10",
        "mailer_urls": "http://127.0.0.1:9",
        "protools_keys": new_entry("k1"),
    } | overrides


def test_protools_settings_from_values_take_the_defaults_of_what_is_not_given() -> None:
    settings = ProtoolsSettings.from_options(_protools(call_timeout=1.5, admission_floor=8))
    assert settings.generator_urls == ("http://127.0.0.1:9", "http://127.0.0.1:10")
    assert settings.call_timeout == 1.5
    assert settings.flow.admission_floor == 8
    assert settings.wait_max == config.default("wait-max")
    assert settings.flow.queue == QueueSettings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"generator_urls": None}, "METALLICA_GENERATOR_URLS is required"),
        ({"generator_urls": " , "}, "METALLICA_GENERATOR_URLS is required"),
        ({"database_url": "mysql://x"}, "sqlite:///"),
        ({"mail_domain": "not a domain"}, "METALLICA_MAIL_DOMAIN"),
        ({"api_token": None}, "METALLICA_CLIENT_TOKENS (or METALLICA_API_TOKEN) is required"),
        ({"client_tokens": "nocolon"}, "METALLICA_CLIENT_TOKENS"),
    ],
)
def test_protools_settings_say_in_one_line_what_is_wrong(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ProtoolsSettings.from_options(_protools(**overrides))


def test_serve_says_what_is_wrong_in_one_line_and_exits_2() -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "mailer", "--database-url", "sqlite:///x.db", "--api-token", "t"],
        env={"METALLICA_MAILDIR": ""},
    )
    assert result.exit_code == 2
    assert "METALLICA_MAILDIR is required" in result.output
    assert "Traceback" not in result.output


def test_a_bound_is_checked_by_the_flag() -> None:
    result = CliRunner().invoke(main, ["serve", "protools", "--admission-queue-max", "-1"])
    assert result.exit_code == 2
    assert "--admission-queue-max" in result.output
