"""The size table: vCPU, memory and local NVMe storage for every `pgSize`.

The API publishes no table of sizes (docs/api-behaviour.md §11.1), only the names and two
observed storage figures (r6gd.medium = 59 GiB, r8gd.large = 118 GiB). We derive
each figure from the instance naming rules of the clouds, which is what the
console shows:

- AWS: ``medium`` = 1 vCPU, ``large`` = 2, ``xlarge`` = 4, ``Nxlarge`` = 4·N.
  Memory per vCPU: c = 2 GiB, m = 4 GiB, r and the storage-optimised i = 8 GiB.
  NVMe per vCPU: c/m/r ``gd``/``id`` = 59 GiB (matches both observed figures),
  i7i/i8g = 234 GiB, i7ie/i8ge = 625 GiB.
- GCP: the trailing number is the vCPU count. Memory per vCPU: ``highmem`` 8 GiB
  (c4 and c4d 7.75), ``standard`` 4 GiB (c4 3.75, c4d 3.875), z3 8 GiB.
  Local SSD is one 375 GiB disk per 4 vCPU (z3: 3,000 GiB per 8 vCPU).

The sizes themselves come from the embedded spec's enum, so a size added to the
spec shows up here; one whose name breaks the rules gets ``None`` figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

__all__ = ["SizeSpec", "all_sizes", "size_spec"]

_AWS = re.compile(r"^(?P<family>[a-z]\d+[a-z]*)\.(?P<mult>\d*)(?P<base>medium|large|xlarge)$")
_GCP = re.compile(r"^(?P<family>[a-z]\d+[a-z]?)-(?P<kind>[a-z]+)-(?P<vcpu>\d+)$")

_AWS_MEM = {"c": 2.0, "m": 4.0, "r": 8.0, "i": 8.0}
_AWS_DISK = {"i7i": 234, "i8g": 234, "i7ie": 625, "i8ge": 625}
_GCP_MEM = {
    ("c4", "highmem"): 7.75,
    ("c4", "standard"): 3.75,
    ("c4d", "highmem"): 7.75,
    ("c4d", "standard"): 3.875,
}


@dataclass(frozen=True, slots=True)
class SizeSpec:
    """What one size provisions. ``family`` groups sizes in forms and frames."""

    name: str
    provider: str
    family: str
    vcpus: int
    memory_gib: float
    storage_gib: int

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def storage_bytes(self) -> int:
        return self.storage_gib * 2**30

    @property
    def label(self) -> str:
        """Short text for a dropdown: ``r8gd.large · 2 vCPU · 16 GiB``."""
        mem = f"{self.memory_gib:g}"
        return f"{self.name} · {self.vcpus} vCPU · {mem} GiB"


def _aws(name: str) -> SizeSpec | None:
    m = _AWS.match(name)
    if not m:
        return None
    family, base, mult = m["family"], m["base"], m["mult"]
    vcpus = {"medium": 1, "large": 2, "xlarge": 4}[base] * (int(mult) if mult else 1)
    mem = _AWS_MEM.get(family[0])
    if mem is None:
        return None
    disk = _AWS_DISK.get(family, 59)
    return SizeSpec(name, "aws", family, vcpus, mem * vcpus, disk * vcpus)


def _gcp(name: str) -> SizeSpec | None:
    m = _GCP.match(name)
    if not m:
        return None
    family, kind, vcpus = m["family"], m["kind"], int(m["vcpu"])
    if family == "z3":
        mem, disk = 8.0, 375 * vcpus  # 3,000 GiB per 8 vCPU
    else:
        mem = _GCP_MEM.get((family, kind), 8.0 if kind == "highmem" else 4.0)
        disk = 375 * max(1, vcpus // 4)
    return SizeSpec(name, "gcp", f"{family}-{kind}", vcpus, mem * vcpus, disk)


def size_spec(name: str) -> SizeSpec | None:
    """The figures of one size, or ``None`` for a name the rules do not cover."""
    return _aws(name) or _gcp(name)


@cache
def all_sizes() -> tuple[SizeSpec, ...]:
    """Every size of the spec's ``pgSize`` enum that the rules cover, in spec order."""
    from pgcloud_nb.spec import enum_values

    specs = (size_spec(n) for n in enum_values("pgSize"))
    return tuple(s for s in specs if s is not None)
