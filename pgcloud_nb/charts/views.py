"""The two ways a LiveChart's figure reaches the notebook.

- :class:`PngView`: the figure is rendered on an Agg canvas and each frame is
  sent as a PNG to an ``ipywidgets.Image``. Needs nothing beyond ipywidgets;
  a picture, without zoom or hover.
- :class:`InteractiveView`: the figure's canvas *is* the widget (ipympl's
  ``Canvas``), with its toolbar for zoom and pan, and a hover label that shows
  the value under the mouse (:class:`Hover`, a ``motion_notify_event``
  handler: no extra dependency). ipympl renders when the browser asks for a
  frame, so a redraw costs nothing while nobody is looking. Before a browser
  has shown the canvas (a notebook run headless, or a saved notebook), frames
  are rendered at once so that the widget's saved state holds a picture.

Neither view goes through pyplot: a pyplot figure would be shown a second time
by the inline backend, closed after any cell that plots, and kept in
``plt.get_fignums()`` until closed by hand.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import io
import itertools
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as widgets
import numpy as np
from matplotlib.backend_bases import Event, MouseEvent
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .style import INK

__all__ = ["Hover", "InteractiveView", "PngView", "View", "ipympl_available", "make_view"]

HOVER_PIXELS = 12.0  # how near (in screen pixels) the mouse must come to a sample
_NUMBERS = itertools.count(1)

# (axes, line, x as a date number, y) -> the hover text
Describe = Callable[[Any, Any, float, float], str]


class View(Protocol):
    """What the chart asks of a view: a widget to place, a refresh, and an end."""

    widget: widgets.DOMWidget
    interactive: bool

    def show(self) -> None: ...

    def close(self) -> None: ...


def ipympl_available() -> bool:
    return importlib.util.find_spec("ipympl") is not None


class PngView:
    """Agg canvas → PNG → ``ipywidgets.Image``."""

    interactive = False

    def __init__(self, figure: Figure) -> None:
        self.canvas = FigureCanvasAgg(figure)
        self.widget: widgets.DOMWidget = widgets.Image(format="png")

    def show(self) -> None:
        self.canvas.draw()
        self.widget.value = _png(self.canvas)

    def close(self) -> None:
        self.widget.close()


def _png(canvas: FigureCanvasAgg) -> bytes:
    """The buffer just rendered, as PNG (savefig would render the figure a second time)."""
    width, height = canvas.get_width_height(physical=True)
    img = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    img.save(out, format="png", compress_level=1)
    return out.getvalue()


class InteractiveView:
    """ipympl's canvas widget with its toolbar, and a hover label."""

    interactive = True

    def __init__(
        self, figure: Figure, describe: Describe, on_home: Callable[[], None] | None = None
    ) -> None:
        try:
            backend = importlib.import_module("ipympl.backend_nbagg")
        except ImportError as exc:
            raise ImportError(
                "an interactive LiveChart needs ipympl: pip install 'pgcloud-nb[notebook]', "
                "or pass interactive=False for PNG frames"
            ) from exc
        self.canvas = backend.Canvas(figure)
        # A manager of our own, never registered with pyplot's figure list.
        self.manager = backend.FigureManager(self.canvas, next(_NUMBERS))
        self.canvas.header_visible = False  # "Figure 1": says nothing here
        self.canvas.footer_visible = False  # raw x=… y=… text; the hover label says it better
        self.canvas.resizable = False  # margins are laid out for the figure's own size
        self.canvas.toolbar_position = "right"
        self.widget: widgets.DOMWidget = self.canvas
        if on_home is not None:
            # The toolbar's home goes back to the view it saw first; for a live chart
            # "home" means: follow the data again.
            self.manager.toolbar.home = lambda *_: on_home()
        self.hover = Hover(figure, describe)
        self.canvas.mpl_connect("motion_notify_event", self.hover.on_move)
        self.canvas.mpl_connect("figure_leave_event", self.hover.on_leave)

    def show(self) -> None:
        if self.canvas.syncing_data_url:
            # No browser has shown the canvas yet: render now and store the frame in the
            # widget's state (what a saved or headless notebook shows). Not through
            # ipympl's draw(): until the browser says 'initialized' it sends the raw
            # RGBA buffer, not a PNG, as the frame, and stores base64 without its
            # "data:" scheme. The browser loads either into its image, the image is
            # broken, and the drawImage on 'resize' throws before the canvas is sized:
            # a 0x0 canvas that never paints. Agg alone renders without sending.
            FigureCanvasAgg.draw(self.canvas)
            encoded = base64.b64encode(_png(self.canvas)).decode("ascii")
            self.canvas._data_url = f"data:image/png;base64,{encoded}"
        else:
            self.canvas.draw_idle()  # the browser asks for the frame when it can paint it

    def close(self) -> None:
        self.manager.toolbar.close()
        self.canvas.close()


class Hover:
    """A label with the value of the sample nearest the mouse, in the axes it is over."""

    def __init__(self, figure: Figure, describe: Describe) -> None:
        self.figure = figure
        self.describe = describe
        self.labels: dict[Any, Any] = {}  # axes -> its annotation, made on first use
        self.shown: tuple[Any, float, float] | None = None

    def _label(self, ax: Any) -> Any:
        label = self.labels.get(ax)
        if label is None:
            label = ax.annotate(
                "",
                xy=(0, 0),
                xytext=(10, 10),
                textcoords="offset points",
                fontsize=8,
                color="#1a1a1a",
                bbox={"boxstyle": "round,pad=0.3", "fc": "#f4f4f4", "ec": INK, "alpha": 0.95},
                zorder=10,
            )
            label.set_visible(False)
            self.labels[ax] = label
        return label

    def nearest(self, event: MouseEvent) -> tuple[Any, float, float] | None:
        """(line, x, y) of the sample nearest the mouse, if within HOVER_PIXELS."""
        ax = event.inaxes
        if ax is None or event.x is None or event.y is None:
            return None
        best: tuple[float, Any, float, float] | None = None
        for line in ax.get_lines():
            x, y = (np.asarray(v, np.float64) for v in line.get_data())
            if not len(x):
                continue
            screen = ax.transData.transform(np.column_stack([x, y]))
            dist = np.hypot(screen[:, 0] - event.x, screen[:, 1] - event.y)
            i = int(np.nanargmin(dist)) if np.isfinite(dist).any() else -1
            if i >= 0 and dist[i] <= HOVER_PIXELS and (best is None or dist[i] < best[0]):
                best = (float(dist[i]), line, float(x[i]), float(y[i]))
        return None if best is None else best[1:]

    def on_move(self, event: Event) -> None:
        if not isinstance(event, MouseEvent):
            return
        found = self.nearest(event)
        if found == self.shown:
            return
        self._hide_all()
        if found is not None:
            line, x, y = found
            label = self._label(line.axes)
            label.xy = (x, y)
            label.set_text(self.describe(line.axes, line, x, y))
            # Near the right edge the label opens to the left, so it stays inside.
            right = event.x > line.axes.bbox.x0 + 0.6 * line.axes.bbox.width
            label.set_position((-10, 10) if right else (10, 10))
            label.set_horizontalalignment("right" if right else "left")
            label.set_visible(True)
        self.shown = found
        self.figure.canvas.draw_idle()

    def on_leave(self, _event: Event) -> None:
        if self.shown is not None:
            self._hide_all()
            self.shown = None
            self.figure.canvas.draw_idle()

    def _hide_all(self) -> None:
        for label in self.labels.values():
            label.set_visible(False)


def make_view(
    figure: Figure,
    interactive: bool | None,
    describe: Describe,
    on_home: Callable[[], None] | None = None,
) -> View:
    """ipympl when asked for, or when ``None`` and ipympl is installed; else PNG frames."""
    if interactive is None:
        interactive = ipympl_available()
    if interactive:
        return InteractiveView(figure, describe, on_home)
    return PngView(figure)
