"""How a LiveChart looks: theme-neutral colours, stable series colours, the time axis.

- **Both JupyterLab themes.** The figure and axes have no background (the
  notebook's own shows through) and every text, tick and grid line is a middle
  grey (:data:`INK`) that reads on white and on JupyterLab's dark
  ``#111111`` alike. The series palette (:data:`PALETTE`) keeps to middle
  luminance for the same reason: matplotlib's default navy and olive vanish on
  a dark page, its yellow on a white one.
- **A colour per series that stays put.** :class:`ColourBook` hands each key
  (a service, or a label value when one service is charted) the next palette
  colour once and remembers it, so stopping and starting, or a series leaving
  and coming back, never recolours a line. The axes' own colour cycle would
  move on with every new line instead.
- **A time axis that fits the data.** :func:`time_limits` starts the axis at
  the first sample and lets it grow until it spans the window, then slides.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

__all__ = ["INK", "LINESTYLES", "PALETTE", "ColourBook", "time_limits"]

INK = "#787878"  # text, ticks and grid: 4.4:1 on white, 4.3:1 on #111111
# Ten hues, each brought to the relative luminance (0.21) that gives 4:1 against white
# and 4.7:1 against #111111: every line is as visible in one theme as in the other.
PALETTE = (
    "#2380dc",  # blue
    "#c1670d",  # orange
    "#218e75",  # green
    "#de4952",  # red
    "#9469d1",  # violet
    "#997b1e",  # ochre
    "#d345a6",  # pink
    "#1a8aa1",  # cyan
    "#78852f",  # olive
    "#a77350",  # brown
)
LINESTYLES = ("-", "--", ":", "-.")
MIN_SPAN = 60.0  # seconds the time axis shows at least (one sample alone has no extent)


class ColourBook:
    """Key → index into a palette, given once and kept for the life of the chart.

    ``order`` fixes the index of keys known up front (the services a chart was
    given, in the order given). Keys met later get the next free index; keys
    met together are taken in sorted order, so the same data always colours
    the same way.
    """

    def __init__(self, order: Iterable[Hashable] = ()) -> None:
        self._index: dict[Hashable, int] = {}
        for key in order:
            self._index.setdefault(key, len(self._index))

    def meet(self, keys: Iterable[Hashable]) -> None:
        """Register keys not seen yet, in sorted order (by their text)."""
        for key in sorted({k for k in keys if k not in self._index}, key=str):
            self._index[key] = len(self._index)

    def index(self, key: Hashable) -> int:
        if key not in self._index:
            self.meet([key])
        return self._index[key]

    def colour(self, key: Hashable) -> str:
        return PALETTE[self.index(key) % len(PALETTE)]

    def style(self, key: Hashable) -> str:
        return LINESTYLES[self.index(key) % len(LINESTYLES)]

    def __len__(self) -> int:
        return len(self._index)


def time_limits(
    oldest: float, newest: float, window: float, min_span: float = MIN_SPAN
) -> tuple[float, float]:
    """The x-limits (matplotlib date numbers, in days) for samples from oldest to newest.

    From the first sample while the data spans less than ``window`` seconds
    (at least ``min_span`` wide, so one sample is not a zero-width axis), then
    the last ``window`` seconds.
    """
    day = 86400.0
    span = (newest - oldest) * day
    if span >= window:
        return newest - window / day, newest
    return oldest, oldest + max(span, min(min_span, window)) / day
