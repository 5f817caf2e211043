"""The sandbox's realism knobs, read from CLI flags or ``PGCLOUD_SANDBOX_*`` variables.

Defaults behave like the real API: the rate limit is on (10 requests per 10 s
per key) and no faults are injected. Provisioning is as fast as PostgreSQL can
start unless ``provisioning_delay`` asks for more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pgcloud_nb.regions import ANY

__all__ = [
    "FAULT_KINDS",
    "Settings",
    "default_home",
    "parse_faults",
    "parse_rate_limit",
    "parse_regions",
    "user_home",
]

_REGION_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

# What a share of answers can be turned into: an HTTP status, or a dropped connection.
FAULT_KINDS = ("500", "503", "429", "drop")


def default_home() -> Path:
    """``$PGCLOUD_SANDBOX_HOME``, else a per-user folder.

    Root's home (/root) is not reachable by the unprivileged user PostgreSQL
    runs as, so root's default lives under /var/lib instead.
    """
    if env := os.environ.get("PGCLOUD_SANDBOX_HOME"):
        return Path(env).expanduser().resolve()
    return user_home()


def user_home() -> Path:
    """The per-user default home, whatever ``$PGCLOUD_SANDBOX_HOME`` says.

    PostgreSQL majors installed there serve every sandbox of this user (see
    ``postgres.binaries``), including test sandboxes in throwaway homes.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/pgcloud-nb/sandbox")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "pgcloud-nb" / "sandbox"


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``"10/10"`` → (10 requests, 10.0 s); ``"off"`` or ``"0"`` → (0, 0.0), no limit."""
    t = text.strip().lower()
    if t in ("off", "0", "none", ""):
        return 0, 0.0
    count, _, window = t.partition("/")
    try:
        n, w = int(count), float(window or "10")
    except ValueError:
        raise ValueError(
            f"rate limit must look like '10/10' (requests/seconds) or 'off', got {text!r}"
        ) from None
    if n < 0 or w <= 0:
        raise ValueError(f"rate limit needs a positive count and window, got {text!r}")
    return n, w


def parse_faults(text: str) -> dict[str, float]:
    """``"500=0.05,drop=0.05"`` → {"500": 0.05, "drop": 0.05}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, share = part.partition("=")
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {FAULT_KINDS} as kind=share, got {part!r}")
        try:
            value = float(share)
        except ValueError:
            raise ValueError(f"fault share must be a number from 0 to 1, got {part!r}") from None
        if not 0 <= value <= 1:
            raise ValueError(f"fault share must be from 0 to 1, got {part!r}")
        out[kind] = value
    if sum(out.values()) > 1:
        raise ValueError(f"fault shares add up to more than 1: {text!r}")
    return out


def parse_regions(text: str) -> tuple[str, ...]:
    """``"eu-north-1, ap-southeast-2"`` → the regions added to every provider's list;
    ``"*"`` accepts every region (docs/api-behaviour.md, "Regions the sandbox accepts")."""
    found = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    for region in found:
        if region != ANY and not _REGION_RE.fullmatch(region):
            raise ValueError(f"a region is letters, digits and dashes (or '*'), got {region!r}")
    return found


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


# (variable, field, parser): one table, so from_env and the docs cannot drift apart.
_ENV: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("PGCLOUD_SANDBOX_HOME", "home", _path),
    ("PGCLOUD_SANDBOX_PORT", "port", int),
    ("PGCLOUD_SANDBOX_PROVISIONING_DELAY", "provisioning_delay", float),
    ("PGCLOUD_SANDBOX_RATE_LIMIT", "rate_limit", parse_rate_limit),
    ("PGCLOUD_SANDBOX_LATENCY", "latency", float),
    ("PGCLOUD_SANDBOX_FAULTS", "faults", parse_faults),
    ("PGCLOUD_SANDBOX_SAMPLE_INTERVAL", "sample_interval", float),
    ("PGCLOUD_SANDBOX_SEED", "seed", int),
    ("PGCLOUD_SANDBOX_MAX_SERVICES", "max_services", int),
    ("PGCLOUD_SANDBOX_BACKUP_INTERVAL", "backup_interval", float),
    ("PGCLOUD_SANDBOX_BACKUP_RETENTION", "backup_retention", float),
    ("PGCLOUD_SANDBOX_REGIONS", "regions", parse_regions),
)


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port; the chosen one is written to the home's state file
    provisioning_delay: float = 0.0  # extra seconds a create/restart spends before `running`
    rate_limit: int = 10  # requests per window per key; 0 turns the limit off
    rate_window: float = 10.0
    latency: float = 0.0  # seconds added to every answer
    faults: dict[str, float] = field(default_factory=dict)  # kind -> share of answers
    sample_interval: float = 10.0  # seconds between telemetry samples of each service
    # Every service is a real server on this machine, so the org has a quota, as real orgs do.
    max_services: int = 50
    seed: int | None = None  # seeds fault injection, for reproducible tests
    # docs/api-behaviour.md §7.1: a daily full backup, kept 7 days (Scale tier). Seconds.
    backup_interval: float = 24 * 3600.0
    backup_retention: float = 7 * 24 * 3600.0
    # Regions accepted beyond pgcloud_nb.regions' list, for every provider; "*": any.
    regions: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PGCLOUD_SANDBOX_*`` variables; ``overrides`` (flags) win.

        A bad value raises ValueError naming the variable.
        """
        e = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for var, name, parse in _ENV:
            raw = e.get(var)
            if raw is None or (raw == "" and name != "rate_limit"):
                continue
            try:
                value = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None
            if name == "rate_limit":
                kw["rate_limit"], kw["rate_window"] = value
            else:
                kw[name] = value
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        rl = f"{self.rate_limit}/{self.rate_window:g}" if self.rate_limit else "off"
        env = {
            "PGCLOUD_SANDBOX_HOME": str(self.home),
            "PGCLOUD_SANDBOX_PORT": str(self.port),
            "PGCLOUD_SANDBOX_PROVISIONING_DELAY": str(self.provisioning_delay),
            "PGCLOUD_SANDBOX_RATE_LIMIT": rl,
            "PGCLOUD_SANDBOX_LATENCY": str(self.latency),
            "PGCLOUD_SANDBOX_FAULTS": ",".join(f"{k}={v}" for k, v in self.faults.items()),
            "PGCLOUD_SANDBOX_SAMPLE_INTERVAL": str(self.sample_interval),
            "PGCLOUD_SANDBOX_MAX_SERVICES": str(self.max_services),
            "PGCLOUD_SANDBOX_BACKUP_INTERVAL": str(self.backup_interval),
            "PGCLOUD_SANDBOX_BACKUP_RETENTION": str(self.backup_retention),
            "PGCLOUD_SANDBOX_REGIONS": ",".join(self.regions),
        }
        if self.seed is not None:
            env["PGCLOUD_SANDBOX_SEED"] = str(self.seed)
        return env

    def with_(self, **changes: Any) -> Settings:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown sandbox settings: {sorted(unknown)}")
        return replace(self, **changes)
