"""What a hot standby needs of its primary's settings: HA standbys and read replicas alike.

PostgreSQL refuses to run a hot standby whose ``max_connections``,
``max_worker_processes``, ``max_wal_senders``, ``max_prepared_transactions`` or
``max_locks_per_transaction`` is lower than its primary's: it compares them with
what the primary recorded in its WAL, at start (the server stops) and again on
replaying a restart of the primary with larger ones (the replay pauses). And a
standby runs no serializable transaction, so with ``default_transaction_isolation
= serializable`` every query on one fails. (PostgreSQL docs, "Hot Standby",
Administrator's Overview.)

As a managed service does, the sandbox derives these from the primary:

- every node runs :data:`NODE_DEFAULTS` unless its pgConfig says otherwise (the
  nodes' base settings pin them: :data:`~.nodes.REPLICATION`); the last three are
  no pgConfig key, so they are the same on every node;
- a follower runs at least what its primary runs now and will run after its next
  start (:func:`needed`), and ``repeatable read`` where the primary's pgConfig says
  ``serializable`` (:func:`for_standby`). A read replica's stored pgConfig is this
  derived one, so GET /config shows what the replica really runs; an HA standby is
  internal and simply runs it (docs/api-behaviour.md, "Replicas and standbys follow
  their primary's settings").

Only pure functions here; :mod:`.followers` applies them to the servers.
"""

from __future__ import annotations

import re

__all__ = [
    "ISOLATION",
    "NODE_DEFAULTS",
    "for_standby",
    "needed",
    "pg_int",
    "runs",
    "standby_config",
]

# What every node runs when its pgConfig sets none of these (the sandbox's base
# settings pin each: PostgreSQL's own defaults, but 64 WAL senders for the replicas).
NODE_DEFAULTS = {
    "max_connections": 100,
    "max_worker_processes": 8,
    "max_wal_senders": 64,
    "max_prepared_transactions": 0,
    "max_locks_per_transaction": 64,
}
ISOLATION = "default_transaction_isolation"
# What a standby runs instead of serializable: the strongest level it has.
STANDBY_ISOLATION = "repeatable read"

# strtol(…, 0), as PostgreSQL's parse_int reads an integer setting: hex, octal or decimal.
_STRTOL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def pg_int(text: str) -> int | None:
    """An integer setting's value as PostgreSQL reads it ("0x40" and "64.4" are 64),
    or None when it reads none."""
    m = _STRTOL.match(text)
    if m and not text[m.end() :].strip():
        digits = m.group(2)
        if digits[:2].lower() == "0x":
            value = int(digits[2:], 16)
        elif len(digits) > 1 and digits[0] == "0":
            value = int(digits, 8)
        else:
            value = int(digits)
        return -value if m.group(1) == "-" else value
    try:  # a fraction or exponent: PostgreSQL rounds to the nearest (rint)
        return round(float(text))
    except (ValueError, OverflowError):
        return None


def runs(config: dict[str, str]) -> dict[str, int]:
    """The :data:`NODE_DEFAULTS` settings a node with user settings ``config`` starts with."""
    out = dict(NODE_DEFAULTS)
    for name in out:
        value = pg_int(str(config[name])) if name in config else None
        if value is not None:
            out[name] = value
    return out


def needed(primary_config: dict[str, str], *recorded: dict[str, int]) -> dict[str, int]:
    """What a follower must run at least: what the primary runs after its next start
    (its pgConfig) and every value ``recorded`` (pg_controldata of the primary, now;
    of the follower's copy, from the WAL it still has to replay)."""
    out = runs(primary_config)
    for values in recorded:
        for name, value in values.items():
            if name in out:
                out[name] = max(out[name], value)
    return out


def for_standby(
    config: dict[str, str], minimums: dict[str, int]
) -> tuple[dict[str, str], list[str]]:
    """(``config`` as a hot standby can run it, what changed in words): a value below
    ``minimums`` is raised to it, and serializable becomes repeatable read."""
    out, changes = dict(config), []
    have = runs(config)
    for name, least in minimums.items():
        if name in have and have[name] < least:
            out[name] = str(least)
            changes.append(f"{name} {have[name]} -> {least} (its primary's)")
    if str(config.get(ISOLATION, "")).strip().lower() == "serializable":
        out[ISOLATION] = STANDBY_ISOLATION
        changes.append(f"{ISOLATION} serializable -> {STANDBY_ISOLATION} (none on a standby)")
    return out, changes


def standby_config(primary_config: dict[str, str]) -> dict[str, str]:
    """What an HA standby of a primary with ``primary_config`` runs: the same, as a
    standby can (its values equal the primary's, so only the isolation changes)."""
    return for_standby(primary_config, {})[0]
