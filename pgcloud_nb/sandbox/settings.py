"""The sandbox's realism knobs, read from CLI flags or ``PGCLOUD_SANDBOX_*`` variables.

Defaults behave like the real API: the rate limit is on (10 requests per 10 s
per key) and no faults are injected. Provisioning is as fast as PostgreSQL can
start unless ``provisioning_delay`` asks for more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["FAULT_KINDS", "Settings", "default_home", "parse_faults", "parse_rate_limit"]

# What a share of answers can be turned into: an HTTP status, or a dropped connection.
FAULT_KINDS = ("500", "503", "429", "drop")


def default_home() -> Path:
    """``$PGCLOUD_SANDBOX_HOME``, else a per-user folder.

    Root's home (/root) is not reachable by the unprivileged user PostgreSQL
    runs as, so root's default lives under /var/lib instead.
    """
    if env := os.environ.get("PGCLOUD_SANDBOX_HOME"):
        return Path(env).expanduser().resolve()
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
        raise ValueError(f"rate limit must look like '10/10' (requests/seconds) or 'off', got {text!r}") from None
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
    seed: int | None = None  # seeds fault injection, for reproducible tests

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        e = os.environ if env is None else env
        kw: dict[str, Any] = {}
        if v := e.get("PGCLOUD_SANDBOX_HOME"):
            kw["home"] = Path(v).expanduser().resolve()
        if v := e.get("PGCLOUD_SANDBOX_PORT"):
            kw["port"] = int(v)
        if v := e.get("PGCLOUD_SANDBOX_PROVISIONING_DELAY"):
            kw["provisioning_delay"] = float(v)
        if (v := e.get("PGCLOUD_SANDBOX_RATE_LIMIT")) is not None:
            kw["rate_limit"], kw["rate_window"] = parse_rate_limit(v)
        if v := e.get("PGCLOUD_SANDBOX_LATENCY"):
            kw["latency"] = float(v)
        if v := e.get("PGCLOUD_SANDBOX_FAULTS"):
            kw["faults"] = parse_faults(v)
        if v := e.get("PGCLOUD_SANDBOX_SAMPLE_INTERVAL"):
            kw["sample_interval"] = float(v)
        if v := e.get("PGCLOUD_SANDBOX_SEED"):
            kw["seed"] = int(v)
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
