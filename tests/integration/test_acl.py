"""Least-privilege users: the services work with their own credentials, and each user is
refused what it must not do, also from inside a Lua script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from exactsum.counters import Event
from exactsum.keys import Keys
from exactsum_admin.acl import acl_file
from tests.localredis import LocalRedis
from tests.procs import Services, assert_exact, finish, numbers_file, random_sum

PASSWORDS = {user: f"{user}-secret-password" for user in ("producer", "consumer", "admin")}


@pytest.fixture
def acl_redis(tmp_path: Path, key_prefix: str) -> Iterator[LocalRedis]:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_file(key_prefix, PASSWORDS))
    server = LocalRedis(extra_args=["--aclfile", str(aclfile)], username="admin",
                        password=PASSWORDS["admin"])
    server.start()
    yield server
    server.close()


def as_user(server: LocalRedis, user: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=user,
                       password=PASSWORDS[user], socket_timeout=5)


def creds(user: str) -> dict[str, str]:
    return {"REDIS_USERNAME": user, "REDIS_PASSWORD": PASSWORDS[user]}


@pytest.mark.timeout(120)
def test_services_run_exactly_with_their_own_users(
    acl_redis: LocalRedis, key_prefix: str, tmp_path: Path
) -> None:
    services = Services(acl_redis.url, key_prefix, tmp_path)
    try:
        for _ in range(2):
            services.consumer("--threads", "2", "--fail-rate", "0.001", **creds("consumer"))
        path, total = numbers_file(tmp_path, 20_000)
        producer = services.producer("--input", str(path), "--batch", "10", **creds("producer"))
        assert producer.wait(timeout=90) in (0, 3), producer.stderr[-2000:]
        report = producer.report()
        assert (report["lost"], report["duplicated"]) == (0, 0)
        assert report["sum"] + report["dead_sum"] == total
        assert report["dead_lettered"] > 0  # the dead-letter scripts ran under the ACL too
        # and the admin may requeue them
        requeued = subprocess.run(
            [sys.executable, "-m", "exactsum_admin", "dead", "requeue", "--run",
             report["run_id"], "--all"],
            capture_output=True, text=True, timeout=30,
            env=services.env(**creds("admin")),
        )
        assert requeued.returncode == 0, requeued.stderr
    finally:
        services.close()


@pytest.mark.timeout(60)
def test_a_plain_run_is_exact_under_acl(acl_redis: LocalRedis, key_prefix: str,
                                       tmp_path: Path) -> None:
    services = Services(acl_redis.url, key_prefix, tmp_path)
    try:
        services.consumer("--threads", "2", **creds("consumer"))
        path, total = numbers_file(tmp_path, 10_000)
        report = finish(services.producer("--input", str(path), **creds("producer")))
        assert_exact(report, 10_000, total)
    finally:
        services.close()


def refused(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except redis.exceptions.NoPermissionError:
        return True
    except redis.ResponseError as exc:  # a refusal inside a script comes back as a script error
        return "NOPERM" in str(exc) or "No permissions" in str(exc)
    return False


def test_each_user_is_refused_what_it_must_not_do(acl_redis: LocalRedis, keys: Keys) -> None:
    producer, consumer = as_user(acl_redis, "producer"), as_user(acl_redis, "consumer")
    run = keys.run("r1")
    touch_sum = "return redis.call('INCRBY', KEYS[1], 1)"
    # The producer cannot change a sum, directly or from a script, nor a consumer's records.
    assert refused(lambda: producer.set(run.sum, 1))
    assert refused(lambda: producer.incrby(run.sum, 1))
    assert refused(lambda: producer.eval(touch_sum, 1, run.sum))
    assert refused(lambda: producer.setbit(run.done, 0, 1))
    assert refused(lambda: producer.lpush(keys.inflight("c", 0), b"x"))
    assert refused(lambda: producer.flushall())
    assert refused(lambda: producer.config_set("appendonly", "no"))
    assert refused(lambda: producer.keys("*"))
    # The consumer cannot forge pushes or forget them.
    assert refused(lambda: consumer.setbit(run.pushed, 0, 1))
    assert refused(lambda: consumer.delete(run.pushed))
    assert refused(lambda: consumer.eval("return redis.call('SETBIT', KEYS[1], 0, 1)", 1,
                                         run.pushed))
    assert refused(lambda: consumer.zadd(f"{keys.prefix}:elsewhere", {"x": 1}))
    assert refused(lambda: consumer.flushall())
    assert refused(lambda: consumer.set(f"{keys.prefix}x:other", 1))
    # What each must do is allowed.
    assert producer.hsetnx(run.meta, "items", 3) == 1
    assert consumer.incrby(run.sum, 5) == 5
    assert producer.get(run.sum) == b"5"
    # And nobody gets in without a user.
    anonymous = redis.Redis(host="127.0.0.1", port=acl_redis.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()


def test_wrong_password_ends_the_service_with_a_clear_error(
    acl_redis: LocalRedis, key_prefix: str, tmp_path: Path
) -> None:
    services = Services(acl_redis.url, key_prefix, tmp_path)
    for module in ("consumer_service", "producer_service"):
        result = subprocess.run(
            [sys.executable, "-m", module], capture_output=True, text=True, timeout=30,
            env=services.env(REDIS_USERNAME="consumer", REDIS_PASSWORD="wrong-password-here"),
        )
        assert result.returncode == 2
        assert "AuthenticationError" in result.stderr
        assert "Traceback" not in result.stderr


def test_password_file_for_docker_secrets(acl_redis: LocalRedis, key_prefix: str,
                                          tmp_path: Path) -> None:
    secret = tmp_path / "producer_password"
    secret.write_text(PASSWORDS["producer"] + "\n")
    services = Services(acl_redis.url, key_prefix, tmp_path)
    try:
        services.consumer(**creds("consumer"))
        report = finish(services.producer("--count", "1000", "--seed", "3",
                                          REDIS_USERNAME="producer",
                                          REDIS_PASSWORD_FILE=str(secret)))
        assert_exact(report, 1000, random_sum(1000, 3))
        missing = subprocess.run(
            [sys.executable, "-m", "producer_service"], capture_output=True, text=True,
            timeout=30, env=services.env(REDIS_PASSWORD_FILE=str(tmp_path / "nope")),
        )
        assert missing.returncode == 2 and "REDIS_PASSWORD_FILE" in missing.stderr
    finally:
        services.close()


@pytest.mark.timeout(60)
def test_a_worker_refused_by_redis_stops_the_consumer(
    acl_redis: LocalRedis, key_prefix: str, tmp_path: Path
) -> None:
    """A permission error cannot be retried away: the consumer exits 1 instead of serving on
    with a dead worker, and gives its claim back on the way out."""
    admin = as_user(acl_redis, "admin")
    keys = Keys(key_prefix)
    admin.execute_command("ACL", "SETUSER", "consumer", "-lpos")  # commit.lua will be refused
    services = Services(acl_redis.url, key_prefix, tmp_path)
    try:
        consumer = services.consumer("--threads", "1", **creds("consumer"))
        services.consumer_id(consumer)
        producer = services.producer("--count", "10", "--timeout", "30", **creds("producer"))
        assert consumer.wait(timeout=30) == 1
        assert "can't run this command" in consumer.stderr
        assert consumer.counter(Event.ELEMENTS_GIVEN_BACK) == 1, consumer.counters()
        assert admin.llen(keys.queue) == 1
        assert list(admin.scan_iter(match=f"{key_prefix}:inflight:*")) == []
        producer.popen.kill()
    finally:
        services.close()
