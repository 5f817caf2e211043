"""Raw readings of one PostgreSQL server's processes, sockets and files, for telemetry.

Everything here is a plain read of Linux's /proc, the ``ss`` tool or the data
directory; `telemetry` turns the readings into metrics. Nothing is cached.

- `process_tree` reads the postmaster and every descendant it finds through
  ``/proc/<pid>/task/<pid>/children``. The postmaster is read first: a backend
  reaped in between then briefly drops out of the sum (the caller clamps that
  away) instead of being counted twice.
- `tcp_connections` runs ``ss -tinH state connected '( sport = :PORT )'`` and
  returns the byte counts of every TCP connection to the server's port.
- `disk_usage` walks the data directory and sums the blocks allocated on disk.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "ProcReading",
    "boot_time",
    "disk_usage",
    "process_started_at",
    "process_tree",
    "tcp_connections",
]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_KB = re.compile(r"^(\w+):\s+(\d+) kB", re.MULTILINE)
_SS_BYTES = re.compile(r"\b(bytes_acked|bytes_received):(\d+)")


@dataclass(frozen=True, slots=True)
class ProcReading:
    """One process. CPU figures are seconds, I/O and memory figures bytes.

    ``*_tree`` fields include the children this process has already reaped
    (Linux adds a reaped child's CPU time and I/O to its parent), so summing
    them over the live processes of a tree counts exited backends exactly once.
    """

    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: with the pid, a unique process identity
    user_tree: float
    system_tree: float
    iowait: float  # delayacct_blkio_ticks: this process only, not inherited
    read_bytes_tree: int
    write_bytes_tree: int
    pss: int
    pss_shmem: int
    rss: int  # counts shared pages once per process: an upper bound, for comparison

    @property
    def key(self) -> str:
        return f"{self.pid}:{self.start_ticks}"


@cache
def boot_time() -> float:
    """Epoch seconds at which the machine booted (``btime`` of /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _tree(root: int) -> Iterator[int]:
    stack = [root]
    while stack:
        pid = stack.pop()
        yield pid
        stack.extend(_children(pid))


def _stat_fields(pid: int) -> list[str]:
    # the command name may hold spaces and parentheses: split after the last ")"
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def _memory(pid: int, rss_pages: int) -> tuple[int, int]:
    """(PSS, shared-memory PSS) in bytes; RSS and 0 when smaps_rollup is unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return rss_pages * _PAGE, 0
    kb = {k: int(v) for k, v in _KB.findall(text)}
    if "Pss" not in kb:  # a kernel thread or a process that just exited
        return rss_pages * _PAGE, 0
    return kb["Pss"] * 1024, kb.get("Pss_Shmem", 0) * 1024


def _io(pid: int) -> tuple[int, int]:
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:  # another user's process without CAP_SYS_PTRACE
        return 0, 0
    io = dict(line.split(": ", 1) for line in lines if ": " in line)
    return int(io.get("read_bytes", 0)), int(io.get("write_bytes", 0))


def _read(pid: int) -> ProcReading | None:
    try:
        f = _stat_fields(pid)
    except OSError:
        return None  # exited since it was listed
    # fields after the command name, 0-based: state=0, utime=11, stime=12, cutime=13,
    # cstime=14, starttime=19, rss=21, delayacct_blkio_ticks=39
    utime, stime, cutime, cstime = (int(x) for x in f[11:15])
    reads, writes = _io(pid)
    pss, shmem = _memory(pid, int(f[21]))
    return ProcReading(
        pid=pid,
        start_ticks=int(f[19]),
        user_tree=(utime + cutime) / _TICK,
        system_tree=(stime + cstime) / _TICK,
        iowait=int(f[39]) / _TICK if len(f) > 39 else 0.0,
        read_bytes_tree=reads,
        write_bytes_tree=writes,
        pss=pss,
        pss_shmem=shmem,
        rss=int(f[21]) * _PAGE,
    )


def process_tree(postmaster_pid: int) -> list[ProcReading]:
    """The postmaster (first) and its live descendants; empty when it is not running."""
    out = []
    for pid in _tree(postmaster_pid):
        reading = _read(pid)
        if reading is not None:
            out.append(reading)
    return out if out and out[0].pid == postmaster_pid else []


def process_started_at(reading: ProcReading) -> float:
    """Epoch seconds at which a process started."""
    return boot_time() + reading.start_ticks / _TICK


def tcp_connections(port: int) -> dict[str, tuple[int, int]] | None:
    """``"local peer"`` → (bytes received, bytes acknowledged as sent) per TCP connection.

    Connections over the Unix-domain socket carry no such counters and are not
    here. ``None`` when ``ss`` is missing or fails, so that a failed reading is
    not mistaken for every connection having closed.
    """
    try:
        proc = subprocess.run(
            ["ss", "-tinH", "state", "connected", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out: dict[str, tuple[int, int]] = {}
    key = ""
    for line in proc.stdout.splitlines():
        if line and not line[0].isspace():
            # State Recv-Q Send-Q Local:Port Peer:Port
            key = " ".join(line.split()[-2:])
            continue
        counts = dict(_SS_BYTES.findall(line))
        if key and counts:
            out[key] = (int(counts.get("bytes_received", 0)), int(counts.get("bytes_acked", 0)))
            key = ""
    return out


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk for everything under ``path`` (symlinks not followed)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue  # vanished (a dropped database, a recycled WAL segment)
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total
