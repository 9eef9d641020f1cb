"""The option builder (exactsum.options): a settings dataclass's fields become flags and
environment variables; no process, no Redis."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import pytest

from consumer_service.healthcheck import HealthcheckSettings
from consumer_service.settings import ConsumerSettings
from exactsum import options, transport
from exactsum.options import Options, SettingsError, option, option_fields, positive_int
from exactsum.transport.native import NativeTransport
from exactsum_admin.admin import AdminSettings
from observe.dashboard import DashboardSettings
from observe.status import StatusSettings
from producer_service.settings import ProducerSettings


@dataclass(frozen=True)
class Toy(Options):
    PROG = "toy"
    ENV_PREFIX = "TOY"

    size: int = option(3, env="TOY_SIZE", type=positive_int, help="how big")
    name: str | None = option(None, env="TOY_NAME", help="what it is called")
    loud: bool = option(False, env="TOY_LOUD", help="shout")
    port: int = option(0, env="{prefix}_PORT", type=int, tail=True, help="where")
    colour: str = option("red", env="TOY_COLOUR", choices=["red", "blue"], help="which colour")

    def __post_init__(self) -> None:
        if self.loud and self.size < 2:
            raise SettingsError(f"--loud needs --size 2 or more, not {self.size}")


TOY_VARIABLES = ("TOY_SIZE", "TOY_NAME", "TOY_LOUD", "TOY_PORT", "TOY_COLOUR")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TOY_", "PRODUCER_", "CONSUMER_", "STATUS_", "DASHBOARD_")) or name in (
                "TRANSPORT", "RQ_QUEUE", "KEY_PREFIX", "REDIS_URL", "LOG_LEVEL", "METRICS_ADDR"):
            monkeypatch.delenv(name)


def exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        options.parse(Toy, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: toy "), err
    return err


def test_defaults_come_from_the_fields() -> None:
    assert options.parse(Toy, []) == Toy() == Toy(3, None, False, 0, "red")


def test_a_flag_wins_over_the_variable_and_the_variable_over_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_SIZE", "7")
    assert options.parse(Toy, []).size == 7
    assert options.parse(Toy, ["--size", "5"]).size == 5
    monkeypatch.setenv("TOY_PORT", "99")  # "{prefix}_PORT" with ENV_PREFIX "TOY"
    assert options.parse(Toy, []).port == 99


def test_a_bad_variable_exits_2_naming_it_and_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOY_SIZE", "0")
    err = exits_2([], capsys)
    assert "error: environment variable TOY_SIZE: '0' is not a positive integer" in err


def test_a_bad_flag_exits_2_naming_it_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    err = exits_2(["--size", "big"], capsys)
    assert "argument --size: 'big' is not an integer" in err


def test_a_variable_outside_the_choices_exits_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse checks the choices of a flag only; the builder checks the variable's too.
    monkeypatch.setenv("TOY_COLOUR", "green")
    err = exits_2([], capsys)
    assert "environment variable TOY_COLOUR: invalid choice: 'green' (choose from 'red', " \
        "'blue')" in err
    monkeypatch.setenv("TOY_COLOUR", "blue")
    assert options.parse(Toy, []).colour == "blue"


def test_a_bool_field_is_a_flag_and_its_variable_a_boolean(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert options.parse(Toy, ["--loud"]).loud is True
    monkeypatch.setenv("TOY_LOUD", "yes")
    assert options.parse(Toy, []).loud is True
    assert options.parse(Toy, ["--no-loud"]).loud is False  # the flag wins over the variable
    monkeypatch.setenv("TOY_LOUD", "loudly")
    assert "environment variable TOY_LOUD: 'loudly' is not a boolean" in exits_2([], capsys)


def test_a_none_default_stays_none_and_help_shows_no_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert options.parse(Toy, []).name is None
    assert options.parse(Toy, ["--name", "ada"]).name == "ada"
    with pytest.raises(SystemExit):
        options.parse(Toy, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "what it is called [env: TOY_NAME]" in text
    assert "how big (default: 3) [env: TOY_SIZE]" in text


def test_a_check_across_options_exits_2_with_its_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert "error: --loud needs --size 2 or more, not 1" in exits_2(["--loud", "--size", "1"],
                                                                    capsys)
    with pytest.raises(SettingsError):  # the same check guards settings built in code
        Toy(size=1, loud=True)


def test_tail_options_come_last_in_help() -> None:
    flags = [action.option_strings[0] for action in options.build_parser(Toy)._actions]
    assert flags == ["-h", "--size", "--name", "--loud", "--colour", "--port"]


@pytest.mark.parametrize("cls", [ProducerSettings, ConsumerSettings, StatusSettings,
                                 DashboardSettings, HealthcheckSettings, AdminSettings])
def test_every_option_shows_its_variable_in_help(cls: type[Options]) -> None:
    parser = options.build_parser(cls)
    helps = {a.dest: a.help or "" for a in parser._actions}
    for declared in [cls, *cls.more_options()]:  # the services': every transport's too
        for spec_field, spec in option_fields(declared):
            variable = spec.env.format(prefix=declared.ENV_PREFIX)
            assert helps[spec_field.name].endswith(f"[env: {variable}]"), spec_field.name


@pytest.mark.parametrize("cls", [ProducerSettings, ConsumerSettings])
def test_parsing_nothing_gives_the_declared_defaults(cls: type[Options]) -> None:
    parsed = options.parse(cls, [])
    assert parsed == cls()
    declared = {f.name for part in [cls, *cls.more_options()] for f, _ in option_fields(part)}
    assert declared == set(vars(options.build_parser(cls).parse_args([]))) - set(
        vars(argparse.Namespace()))


@dataclass(frozen=True)
class StreamsOptions(Options):
    streams_group: str = option("sum", env="STREAMS_GROUP", tail=True,
                                help="the consumer group")


class StreamsTransport(NativeTransport):
    name = "streams"
    consumer_options = producer_options = StreamsOptions


@pytest.mark.parametrize("cls", [ProducerSettings, ConsumerSettings])
def test_a_transports_own_options_join_the_services_command_lines(
        cls: type[Options], monkeypatch: pytest.MonkeyPatch) -> None:
    # What a third transport's package declares reaches both services' --help and parser with
    # no change to them (the picked transport's object is tested in test_options.py).
    everyone = transport.registered()
    monkeypatch.setattr(transport, "registered", lambda: [*everyone, StreamsTransport()])
    parser = options.build_parser(cls)
    text = " ".join(parser.format_help().split())
    assert "--streams-group STREAMS_GROUP the consumer group (default: sum) [env: " \
        "STREAMS_GROUP]" in text
    assert "--rq-queue" in text  # beside the RQ transport's
    assert parser.parse_args(["--streams-group", "g2"]).streams_group == "g2"
