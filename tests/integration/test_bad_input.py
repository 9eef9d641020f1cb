"""Bad input and bad options: exit 2, a message that says which line, which value and why, and
nothing pushed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from exactsum.keys import Keys
from tests.launch import parse_report
from tests.procs import Services

INT64_MAX = 2**63 - 1


def run_producer(services: Services, *args: str, stdin: bytes | None = None,
                 **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer_service", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=60, env=services.env(**env),
    )


def assert_nothing_pushed(client: redis.Redis, keys: Keys) -> None:
    assert list(client.scan_iter(match=f"{keys.prefix}:*")) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"1\n2\nthree\n4\n", "line 3: 'three' is not an integer"),
        (b"1\n2.5\n", "line 2: '2.5' is not an integer"),
        (b"1\n\n3\n", "line 2: empty line"),
        (b"5\n9223372036854775808\n", "line 2: '9223372036854775808' is outside signed 64 bits"),
        (b"-9223372036854775809\n", "line 1: '-9223372036854775809' is outside signed 64 bits"),
        (b"1\n0x10\n", "line 2: '0x10' is not an integer"),
        (f"{INT64_MAX}\n1\n".encode(), "positive values add up to 9223372036854775808"),
        (b"\xff\xfe1\n", "not UTF-8"),
    ],
)
def test_bad_input_file_exits_2_with_the_line(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: object, content: bytes,
    expected: str,
) -> None:
    path = f"{tmp_path}/numbers.txt"
    with open(path, "wb") as out:
        out.write(content)
    result = run_producer(services, "--input", path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert_nothing_pushed(client, keys)


def test_bad_line_on_a_stream_stops_there_and_counts_what_came_before(
        services: Services, client: redis.Redis, keys: Keys) -> None:
    """A pipe cannot be validated before pushing: the lines before the bad one are the run,
    counted exactly, and exit 5 says the input stopped at a bad line."""
    services.consumer("--threads", "2")
    result = run_producer(services, "--input", "-", "--batch", "2", "--json",
                          stdin=b"1\n2\n40\nx\n500\n")
    assert result.returncode == 5, result.stderr
    assert "stdin: line 4: 'x' is not an integer" in result.stderr
    report = parse_report(result.stdout)
    assert report is not None, result.stdout
    assert report["input_error"] == "stdin: line 4: 'x' is not an integer"
    assert (report["produced"], report["committed"], report["sum"]) == (3, 3, 43)
    assert report["lines_read"] == 3 and report["ended_by"] == "bad line"
    assert report["exact"] is True


def test_stdin_redirected_from_a_bad_file_is_refused_before_pushing(
        services: Services, client: redis.Redis, keys: Keys, tmp_path: object) -> None:
    """stdin that is a regular file is read twice like any file: refused before any push."""
    path = f"{tmp_path}/numbers.txt"
    with open(path, "wb") as out:
        out.write(b"1\n2\nx\n")
    with open(path, "rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "producer_service", "--input", "-"],
                                stdin=stdin, capture_output=True, text=True, timeout=60,
                                env=services.env())
    assert result.returncode == 2
    assert "stdin: line 3: 'x' is not an integer" in result.stderr
    assert_nothing_pushed(client, keys)


def test_missing_input_file(services: Services, client: redis.Redis, keys: Keys) -> None:
    result = run_producer(services, "--input", "/nonexistent/numbers.txt")
    assert result.returncode == 2
    assert "/nonexistent/numbers.txt: No such file or directory" in result.stderr
    assert_nothing_pushed(client, keys)


def test_random_run_that_could_overflow_is_refused(services: Services, client: redis.Redis,
                                                    keys: Keys) -> None:
    result = run_producer(services, "--count", "3", "--min", "1", "--max", str(INT64_MAX))
    assert result.returncode == 2
    assert "past the signed 64-bit maximum" in result.stderr
    assert_nothing_pushed(client, keys)


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("producer_service", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
        ("producer_service", ["--threads", "0"], "'0' is not a positive integer"),
        ("producer_service", ["--batch", "ten"], "'ten' is not an integer"),
        ("producer_service", ["--min", "5", "--max", "1"], "--min 5 is greater than --max 1"),
        ("producer_service", ["--run-id", "a:b"], "a run id is"),
        ("consumer_service", ["--grace", "-1"], "'-1' is not a finite number >= 0"),
        ("consumer_service", ["--block-timeout", "5", "--heartbeat-ttl", "5"],
         "must stay below --heartbeat-ttl"),
        ("consumer_service", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2_with_usage(services: Services, client: redis.Redis, keys: Keys,
                                       module: str, args: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                            text=True, timeout=60, env=services.env())
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "usage:" in result.stderr
    assert_nothing_pushed(client, keys)


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("producer_service", {"PRODUCER_BATCH": "-3"}, "PRODUCER_BATCH: '-3' is not a positive"),
        ("consumer_service", {"CONSUMER_THREADS": "many"}, "CONSUMER_THREADS: 'many' is not an"),
        ("producer_service", {"PRODUCER_JSON": "maybe"}, "PRODUCER_JSON: 'maybe' is not a bool"),
    ],
)
def test_bad_environment_exits_2(services: Services, module: str, env: dict[str, str],
                                 expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                            timeout=60, env=services.env(**env))
    assert result.returncode == 2
    assert expected in result.stderr


def test_help_lists_options_and_their_variables(services: Services) -> None:
    for module, pairs in (
        ("producer_service", [("--count", "PRODUCER_COUNT"), ("--redis-url", "REDIS_URL")]),
        ("consumer_service", [("--threads", "CONSUMER_THREADS"), ("--grace", "CONSUMER_GRACE")]),
    ):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                                text=True, timeout=60, env=services.env())
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        for option, variable in pairs:
            assert option in text and f"[env: {variable}]" in text
