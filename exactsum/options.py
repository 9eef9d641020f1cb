"""Options declared once: each is a field of a frozen settings dataclass, and one builder makes
the command line and the environment into that dataclass.

A field declared with :func:`option` carries everything about its option: the flag (its name,
``--block-timeout`` for ``block_timeout``), the environment variable, the default (the field's),
the parser that checks a value, and the help. :func:`build_parser` makes an argparse parser of
a settings class's fields, :func:`settings_from` the settings from what it parsed, and
:func:`parse` does both. The variable, when set, replaces the default, and a flag on the command
line wins over both. ``--help`` shows the variable beside each option. A bad value, from either
place, or a failed check across options (the dataclass's ``__post_init__`` raising
:class:`SettingsError`) ends the program with exit status 2 and a usage message that names the
option or variable and says why. docs/settings.md says how to add an option, and why this and
not pydantic-settings or click.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="Options")
# The key of an Option in a dataclass field's metadata.
OPTION = "exactsum.option"


@dataclass(frozen=True)
class Option:
    """How a settings field is given: see :func:`option`."""

    env: str
    help: str
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    tail: bool = False


def option(default: T, *, env: str, help: str, type: Callable[[str], Any] = str,
           choices: Sequence[str] | None = None, tail: bool = False) -> T:
    """A settings field that is also an option: ``--name-of-field`` and ``env``.

    ``type`` turns a string into the value, raising ``argparse.ArgumentTypeError`` with the
    reason when it cannot; a bool default makes a ``--flag/--no-flag`` (the variable then takes
    1/0, true/false, yes/no). ``env`` may name ``{prefix}``, the class's ``ENV_PREFIX``. ``tail``
    lists the option after the command's own ones in ``--help`` (metrics, transport).
    """
    spec = Option(env=env, help=help, type=type, choices=choices, tail=tail)
    made: T = field(default=default, metadata={OPTION: spec})
    return made


class SettingsError(ValueError):
    """A check across options failed; the message names the options and says why."""


@dataclass(frozen=True)
class Options:
    """Base of every settings dataclass whose fields are :func:`option` s."""

    PROG: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    # Fills ``{prefix}`` in a variable's name: PRODUCER_METRICS_PORT, CONSUMER_METRICS_PORT.
    ENV_PREFIX: ClassVar[str] = ""

    @classmethod
    def more_options(cls) -> list[type[Options]]:
        """Settings classes whose options this command takes too, after its own, each declared
        by its owner (the services: every transport's own options); none by default."""
        return []

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The settings of what a parser of :func:`build_parser` parsed; a class with
        :meth:`more_options` builds what it keeps of them here."""
        return cls(**values_of(cls, args))


class EnvParser(argparse.ArgumentParser):
    """An ArgumentParser whose options may take their default from an environment variable."""

    def add_env_option(
        self,
        *flags: str,
        env: str,
        default: Any,
        type: Callable[[str], Any] = str,
        help: str,
        **kwargs: Any,
    ) -> None:
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = type(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.error(f"environment variable {env}: {exc}")
            # argparse checks the choices of a flag's value, never of a default.
            choices = kwargs.get("choices")
            if choices is not None and default not in choices:
                shown = ", ".join(map(repr, choices))
                self.error(f"environment variable {env}: invalid choice: {raw!r} "
                           f"(choose from {shown})")
        shown = "" if default is None else f" (default: {default})"
        self.add_argument(
            *flags, type=type, default=default, help=f"{help}{shown} [env: {env}]", **kwargs
        )

    def add_env_flag(self, flag_name: str, *, env: str, help: str, default: bool = False) -> None:
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = flag(raw)
            except argparse.ArgumentTypeError as exc:
                self.error(f"environment variable {env}: {exc}")
        self.add_argument(
            flag_name, action=argparse.BooleanOptionalAction, default=default,
            help=f"{help} [env: {env}]",
        )


def option_fields(cls: type[Options]) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The option fields of ``cls`` in ``--help`` order: the dataclass's own order (a base
    class's fields first), the ``tail`` ones last."""
    found = [(f, f.metadata[OPTION]) for f in dataclasses.fields(cls) if OPTION in f.metadata]
    return sorted(found, key=lambda pair: pair[1].tail)


def add_options(parser: EnvParser, cls: type[Options]) -> None:
    """Adds an option to ``parser`` for every option field of ``cls``."""
    for spec_field, spec in option_fields(cls):
        flag_name = "--" + spec_field.name.replace("_", "-")
        if "{prefix}" in spec.env and not cls.ENV_PREFIX:
            raise TypeError(f"{cls.__name__}.{spec_field.name}: {spec.env} needs ENV_PREFIX")
        env = spec.env.format(prefix=cls.ENV_PREFIX)
        if isinstance(spec_field.default, bool):
            parser.add_env_flag(flag_name, env=env, help=spec.help, default=spec_field.default)
        else:
            extra = {} if spec.choices is None else {"choices": spec.choices}
            parser.add_env_option(flag_name, env=env, default=spec_field.default,
                                  type=spec.type, help=spec.help, **extra)


def build_parser(cls: type[Options]) -> EnvParser:
    """A parser of ``cls``'s options, then those of its :meth:`~Options.more_options`, named
    ``cls.PROG``; a tool may add plain arguments to it (sub-commands, switches without a
    variable) before it parses. Two classes declaring one flag fail here (argparse's conflict)."""
    parser = EnvParser(prog=cls.PROG or None, description=cls.DESCRIPTION or None)
    for declared in [cls, *cls.more_options()]:
        add_options(parser, declared)
    return parser


def values_of(cls: type[Options], args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s option fields in what a parser parsed, by field name."""
    return {f.name: getattr(args, f.name) for f, _ in option_fields(cls)}


def settings_from(cls: type[S], parser: argparse.ArgumentParser, args: argparse.Namespace) -> S:
    """The settings of what ``parser`` parsed; a failed check across options exits 2 through
    ``parser.error``, like a bad value."""
    try:
        return cls.from_args(args)
    except SettingsError as exc:
        parser.error(str(exc))


def parse(cls: type[S], argv: Sequence[str] | None = None) -> S:
    """``cls`` from the command line (``argv``, default ``sys.argv[1:]``) and the environment."""
    parser = build_parser(cls)
    return settings_from(cls, parser, parser.parse_args(argv))


# The parsers of values: each raises argparse.ArgumentTypeError saying why a text is wrong.


def positive_int(text: str) -> int:
    value = int_value(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = int_value(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def int_value(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return value


def flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")


def cluster_value(text: str) -> str:
    """``REDIS_CLUSTER``: a boolean, or the URL of any node of the cluster (which then replaces
    ``REDIS_URL``). Returns "" (no cluster), "1", or the URL."""
    if text.startswith(("redis://", "rediss://")):
        return text
    return "1" if flag(text) else ""


def key_prefix(text: str) -> str:
    if not text or ":" in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a key prefix is non-empty, without ':' or spaces"
        )
    return text


def sentinel_addresses(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port,...``: the Sentinels to ask where the primary is."""
    found: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, sep, port_text = part.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not host:port (a Sentinel's address, e.g. sentinel-1:26379)")
        found.append((host.strip("[]"), int(port_text)))
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} names no Sentinel (host:port,...)")
    return tuple(found)
