"""One measurement of one server, as the collector writes it and the renderers read it.

A :class:`Sample` is a list of points (metric name, extra labels, value) taken
at one moment. :mod:`telemetry.sampling` makes them (``collect``), the store keeps them
(``to_dict``/``from_dict``), and both renderers read them: :mod:`telemetry.exposition`
(Prometheus text) and :mod:`telemetry.timeseries` (the bucketed ``/metrics`` JSON). It
sits beneath all three so none of them imports another for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INFO", "PS", "Labels", "Point", "Sample"]

PS = "PostgresServer_"  # the prefix of every metric name but INFO's
INFO = "PostgresServiceInfo"

Labels = dict[str, str]
Point = tuple[str, Labels, float]


@dataclass(slots=True)
class Sample:
    """One measurement of one server: (metric name, extra labels, value) at ``taken_at``."""

    taken_at: float
    points: list[Point] = field(default_factory=list)

    def add(self, family: str, value: float, **labels: str) -> None:
        self.points.append((family if family == INFO else PS + family, labels, value))

    def get(self, name: str, **labels: str) -> float | None:
        """The value of one series, e.g. ``get("PostgresServer_CPUSeconds_Total", mode="user")``."""
        return next((v for n, lb, v in self.points if n == name and lb == labels), None)

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": self.taken_at, "points": [[n, lb, v] for n, lb, v in self.points]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        points = [
            (str(n), {str(k): str(x) for k, x in lb.items()}, v) for n, lb, v in data["points"]
        ]
        return cls(float(data["taken_at"]), points)
