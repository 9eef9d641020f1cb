"""Option parsing: defaults, environment variables, the command line over both, and the
checks across options; no process, no Redis."""

from __future__ import annotations

import pytest

from consumer_service.settings import parse_settings as consumer_settings
from exactsum.options import Options, SettingsError
from exactsum.transport.rq.settings import RqProducerSettings, RqSettings
from producer_service.settings import ProducerSettings
from producer_service.settings import parse_settings as producer_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PRODUCER_", "CONSUMER_")) or name in (
                "TRANSPORT", "RQ_QUEUE", "KEY_PREFIX", "REDIS_URL"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = consumer_settings([])
    assert (s.threads, s.grace, s.transport, s.key_prefix) == (4, 10.0, "native", "pc")
    assert s.transport_options == Options()  # the native transport has no options of its own
    p = producer_settings([])
    assert (p.count, p.batch, p.min, p.max, p.seed, p.json) == (100_000, 1000, 1, 11, None,
                                                                 False)


def test_the_environment_replaces_a_default_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSUMER_THREADS", "7")
    monkeypatch.setenv("TRANSPORT", "rq")
    assert consumer_settings([]).threads == 7
    assert consumer_settings([]).transport == "rq"
    assert consumer_settings(["--threads", "2"]).threads == 2
    monkeypatch.setenv("PRODUCER_JSON", "yes")
    assert producer_settings([]).json is True


def test_the_picked_transport_gets_its_own_options_from_flags_and_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Declared by the RQ transport's package; the same flags and variables as ever.
    assert consumer_settings(["--transport", "rq"]).transport_options == RqSettings("exactsum")
    monkeypatch.setenv("RQ_QUEUE", "jobs")
    monkeypatch.setenv("PRODUCER_RQ_RETRIES", "7")
    assert consumer_settings(["--transport", "rq"]).transport_options == RqSettings("jobs")
    assert producer_settings(["--transport", "rq", "--rq-job-timeout", "9"]).transport_options \
        == RqProducerSettings("jobs", rq_job_timeout=9, rq_retries=7, rq_result_ttl=600)
    # Another transport's options are read (and checked) but not kept.
    assert producer_settings(["--rq-retries", "3"]).transport_options == Options()


def test_settings_built_in_code_get_their_transports_defaults_or_refuse_anothers() -> None:
    assert ProducerSettings(transport="rq").transport_options == RqProducerSettings()
    given = RqProducerSettings(rq_retries=0)
    assert ProducerSettings(transport="rq", transport_options=given).transport_options is given
    with pytest.raises(SettingsError, match="--transport rq takes RqProducerSettings, not "
                       "RqSettings"):
        ProducerSettings(transport="rq", transport_options=RqSettings())
    with pytest.raises(SettingsError, match="--transport native takes Options"):
        ProducerSettings(transport_options=RqProducerSettings())


def test_derived_settings() -> None:
    s = consumer_settings(["--heartbeat-ttl", "6", "--block-timeout", "0.5"])
    assert s.heartbeat_interval == 2.0
    assert s.socket_timeout == 2.5  # longer than the blocking claim


@pytest.mark.parametrize(
    ("parse", "argv", "env", "message"),
    [
        (consumer_settings, ["--threads", "0"], {}, "'0' is not a positive integer"),
        (consumer_settings, [], {"CONSUMER_THREADS": "many"}, "CONSUMER_THREADS: 'many'"),
        (consumer_settings, ["--block-timeout", "5", "--heartbeat-ttl", "5"], {},
         "must stay below --heartbeat-ttl"),
        (consumer_settings, ["--grace", "3600"], {}, "--grace must be under an hour"),
        (consumer_settings, ["--fail-rate", "1.5"], {}, "is not a share between 0 and 1"),
        (consumer_settings, ["--transport", "kafka"], {}, "invalid choice: 'kafka'"),
        (producer_settings, ["--min", "5", "--max", "1"], {}, "--min 5 is greater than --max 1"),
        (producer_settings, ["--run-id", "a:b"], {}, "a run id is"),
        (producer_settings, ["--transport", "rq", "--key-prefix", "a.b"], {},
         "with --transport rq a key prefix is made of letters"),
        (producer_settings, [], {"PRODUCER_JSON": "maybe"}, "PRODUCER_JSON: 'maybe'"),
        (consumer_settings, [], {"RQ_QUEUE": "a:b"},
         "environment variable RQ_QUEUE: 'a:b': an RQ queue name is non-empty"),
        (producer_settings, ["--rq-retries", "-1"], {}, "argument --rq-retries: '-1' is negative"),
        (consumer_settings, [], {"LOG_LEVEL": "LOUD"},
         "environment variable LOG_LEVEL: invalid choice: 'LOUD'"),
        (producer_settings, ["--redis-cluster", "1", "--redis-sentinels", "s1:26379"], {},
         "--redis-cluster and --redis-sentinels exclude each other"),
    ],
)
def test_bad_options_exit_2_with_usage_and_the_reason(
    parse: object, argv: list[str], env: dict[str, str], message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)  # type: ignore[operator]
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err, err


def test_the_transports_offered_are_the_registered_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        consumer_settings(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--transport {native,rq}" in text and "[env: TRANSPORT]" in text
