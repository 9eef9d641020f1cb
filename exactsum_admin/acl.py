"""Least-privilege Redis users for the services, as an ACL file.

    python -m exactsum_admin.acl [--key-prefix pc] [--out users.acl]

Three users: ``producer`` may push and read its runs but cannot change a sum; ``consumer`` may
claim, commit and reclaim but cannot push or mark anything pushed; ``admin`` may do anything
(the dead-letter commands, operators). A fourth, ``observer``, is written only when its password
is given: it may read every key under the prefix and write nothing (status, the dashboard).
The ``default`` user is switched off. Redis 7 checks
these permissions for commands inside Lua scripts too, so a script cannot be used to get round
them. Passwords come from ``REDIS_<USER>_PASSWORD_FILE`` (a Docker secret) or
``REDIS_<USER>_PASSWORD``; the file holds only their SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping, Sequence

from exactsum.keys import Keys
from exactsum.options import key_prefix

USERS = ("producer", "consumer", "admin")
OPTIONAL_USERS = ("observer",)

# Commands every service connection sends: AUTH is always allowed; redis-py names its
# connections; scripts are sent by SHA, loaded on NOSCRIPT. (redis-py also announces itself
# with CLIENT SETINFO, which Redis 7.0 does not know and 7.2 refuses here: redis-py ignores
# that answer, so it is left out and the file loads on both.)
_COMMON = ["+ping", "+client|setname", "+evalsha", "+eval", "+script|load"]

# On a Redis Cluster (``--redis-cluster``) the client reads the slot map and the command table
# (COMMAND: where each command has its keys), follows ASK
# redirections with ASKING, and with ``--min-replicas`` sends WAIT after each script; the
# partitions' set (``Keys.partitions``) is written by producers and read by consumers.
_CLUSTER = ["+cluster|slots", "+cluster|shards", "+cluster|nodes", "+command", "+asking",
            "+wait"]

_PRODUCER_COMMANDS = [
    # direct: plan and state (WATCHed: the epoch fences), progress, audit, retention of its
    # own keys, and taking them back on resume
    "+hsetnx", "+hset", "+hget", "+hdel", "+zadd", "+get", "+llen", "+bitcount", "+getbit",
    "+hgetall", "+lrange", "+expire", "+persist", "+watch", "+unwatch", "+multi", "+exec",
    # inside push.lua
    "+lpush", "+setbit",
]

_CONSUMER_COMMANDS = [
    # direct: claims, heartbeat (MULTI), reclaim sweep, retention, status registry
    "+blmove", "+lrange", "+llen", "+scan", "+exists", "+set", "+del", "+zadd", "+zrem",
    "+zrange", "+zremrangebyscore", "+hmget", "+expire", "+get", "+multi", "+exec",
    # inside commit, dead-letter, retry and reclaim scripts
    "+lpos", "+getbit", "+setbit", "+lrem", "+incr", "+incrby", "+hincrby", "+lmove", "+lpush",
    "+rpush",
]

# Read-only: what observe.snapshot and the audit send (MULTI/EXEC wrap one consistent look).
_OBSERVER_COMMANDS = [
    "+get", "+llen", "+lrange", "+hgetall", "+hmget", "+zrange", "+zrevrange", "+bitcount",
    "+getbit", "+scan", "+pttl", "+exists", "+multi", "+exec",
]

# Keys the consumers write in a run; the producer's are meta, pushed and batches (runs.py).
# batches and leases are the RQ transport's; with it, both users also need RQ's own keys and
# commands, which these rules do not grant (use an ACL user written for RQ).
_CONSUMER_RUN_KEYS = ("done", "sum", "committed", "dead_items", "dead", "by_consumer", "stale",
                      "attempts", "dropped", "batches", "leases")


def rules(prefix: str) -> dict[str, list[str]]:
    """Each user's ACL rules, without its password.

    Every key of a partition has a pattern twice: untagged (one Redis, ``pc:queue``) and with
    any hash tag after the prefix (a Redis Cluster's partitions, ``pc:{*}:queue``,
    ``exactsum.keys.Keys.partition``); ACL globs take braces literally."""
    keys = Keys(prefix)

    def rw(*suffixes: str, access: str = "RW") -> list[str]:
        return [f"%{access}~{base}:{suffix}" for suffix in suffixes
                for base in (prefix, f"{prefix}:{{*}}")]

    producer = [
        *_COMMON, *_CLUSTER, *_PRODUCER_COMMANDS, "+sadd",
        f"%RW~{keys.runs}", f"%RW~{keys.partitions}",
        *rw("queue", "run:*:meta", "run:*:pushed", "run:*:batches"), *rw("run:*", access="R"),
    ]
    consumer = [
        *_COMMON, *_CLUSTER, *_CONSUMER_COMMANDS, "+smembers",
        f"%RW~{keys.consumers}", f"%RW~{keys.runs}", f"%R~{keys.partitions}",
        *rw("queue", "inflight:*", "consumer:*", "dead", "stats:*"),
        # commit.lua checks that the run's meta exists in the same atomic step as it counts, and
        # Redis requires read-write permission on every key a script declares.
        *rw("run:*:meta"),
        *rw(*(f"run:*:{name}" for name in _CONSUMER_RUN_KEYS)),
    ]
    observer = [*_COMMON, *_CLUSTER, *_OBSERVER_COMMANDS, "+smembers", f"%R~{prefix}:*"]
    return {"producer": producer, "consumer": consumer, "admin": ["~*", "&*", "+@all"],
            "observer": observer}


def acl_file(prefix: str, passwords: Mapping[str, str]) -> str:
    lines = ["user default off resetkeys resetchannels -@all"]
    for user, user_rules in rules(prefix).items():
        if user in OPTIONAL_USERS and user not in passwords:
            continue
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        lines.append(" ".join(["user", user, "on", f"#{digest}", "resetkeys", "resetchannels",
                               "-@all", *user_rules]))
    return "\n".join(lines) + "\n"


def passwords_from_env() -> dict[str, str]:
    found = {}
    for user in USERS + OPTIONAL_USERS:
        variable = f"REDIS_{user.upper()}_PASSWORD"
        path = os.environ.get(f"{variable}_FILE")
        if path:
            with open(path, encoding="utf-8") as secret:
                found[user] = secret.read().rstrip("\r\n")
        elif os.environ.get(variable):
            found[user] = os.environ[variable]
        elif user in OPTIONAL_USERS:
            continue
        else:
            raise ValueError(f"set {variable}_FILE or {variable}")
        if len(found[user]) < 12:
            raise ValueError(f"the {user} password is shorter than 12 characters")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exactsum_admin.acl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key-prefix", type=key_prefix,
                        default=os.environ.get("KEY_PREFIX", Keys().prefix))
    parser.add_argument("--out", default="-", help="file to write ('-': stdout)")
    args = parser.parse_args(argv)
    try:
        text = acl_file(args.key_prefix, passwords_from_env())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(args.out, 0o640)
    return 0


if __name__ == "__main__":
    sys.exit(main())
