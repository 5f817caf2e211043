"""What widgets report, and the rule that keeps it current.

What an action reports (a status line, an error beside a field,
the error panel, a diff) describes that action only. Every widget that reports
is a :class:`Message`, and every action starts by emptying the messages of its
widget (:func:`action`, :func:`clear_messages`): one rule, in one place, so no
widget keeps an answer to a question nobody asks any more. Colours are
JupyterLab's theme variables (:data:`ERROR_COLOR`…), readable in its dark theme
too, with a fallback for front ends that lack them.

This module sits beside :mod:`pgcloud_nb.jobs` (which re-exports it) and
``import pgcloud_nb`` never loads it (nor ipywidgets).
"""

from __future__ import annotations

import functools
import html
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as widgets

from .errors import APIError
from .redaction import redact

__all__ = [
    "ERROR_COLOR",
    "MUTED_COLOR",
    "TEXT_COLOR",
    "WARN_COLOR",
    "ErrorPanel",
    "Message",
    "Notice",
    "StatusLine",
    "action",
    "clear_messages",
    "styled",
]

F = TypeVar("F", bound=Callable[..., Any])

# JupyterLab's theme variables (light and dark), each with a fallback for other front ends.
ERROR_COLOR = "var(--jp-error-color1, #d32f2f)"
WARN_COLOR = "var(--jp-warn-color1, #e65100)"
TEXT_COLOR = "var(--jp-ui-font-color1, inherit)"
MUTED_COLOR = "var(--jp-ui-font-color2, #757575)"
TONES = {"error": ERROR_COLOR, "warn": WARN_COLOR, "text": TEXT_COLOR, "muted": MUTED_COLOR}


def styled(text_html: str, tone: str = "text", tag: str = "span", cls: str = "") -> str:
    """``text_html`` (already escaped) in a theme colour."""
    klass = f" class='{cls}'" if cls else ""
    return f"<{tag}{klass} style='color:{TONES[tone]}'>{text_html}</{tag}>"


class Message:
    """A widget that reports on the last action; :meth:`clear` empties it.

    A mixin for ipywidgets classes: :func:`clear_messages` finds every one of
    them under a widget.
    """

    def clear(self) -> None:
        raise NotImplementedError


def _one_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ErrorPanel(Message, widgets.Output):
    """A visible box for the error of the last action (callbacks and jobs).

    It shows one line, ``Type: message`` (API errors with their status), and the
    details on request: the requestId and the request for API errors, the last
    frames of the traceback for others. A new error replaces the last one.
    Written with ``append_display_data`` (not ``with out:`` capture), which
    works from a callback, from a task on the loop and without any kernel.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last: BaseException | None = None
        self.add_class("pgcloud-errors")

    def show(self, exc: BaseException) -> None:
        """Show ``exc`` in one line, its details folded away below it."""
        self.last = exc
        name = html.escape(type(exc).__name__)
        if isinstance(exc, APIError):
            rid = exc.request_id or "none"
            head = f"<b>{name} {exc.status}</b>: {html.escape(_one_line(exc.message))}"
            request = f" · {html.escape(exc.method + ' ' + exc.url)}" if exc.url else ""
            details = f"requestId: <code>{html.escape(rid)}</code>{request}"
            rest = exc.message.strip().splitlines()[1:]
            if rest:
                details += f"<pre>{html.escape(chr(10).join(rest))}</pre>"
        else:
            text = redact(str(exc))
            head = f"<b>{name}</b>: {html.escape(_one_line(text))}"
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
            details = f"<pre>{html.escape(redact(tb))}</pre>"
        self._replace(
            styled(head, "error", "div", "pgcloud-error")
            + f"<details><summary>details</summary><small>{details}</small></details>"
        )

    def note(self, text: str) -> None:
        """A refusal that is not an exception (wrong confirmation name, nothing to send)."""
        self._replace(styled(html.escape(text), "warn", "div", "pgcloud-note"))

    def _replace(self, markup: str) -> None:
        from IPython.display import HTML

        self.outputs = ()
        self.append_display_data(HTML(markup))

    def clear(self) -> None:
        self.outputs = ()  # not clear_output(): without a kernel that prints escape codes
        self.last = None  # the error belonged to the action before

    @property
    def text(self) -> str:
        """Everything shown, as plain text (for tests and logs)."""
        parts: list[str] = []
        out: dict[str, Any]
        for out in self.outputs:
            data: dict[str, str] = out.get("data", {})
            parts.append(data.get("text/html") or data.get("text/plain") or out.get("text", ""))
        return "\n".join(parts)


_ICON_TONE = {"⚠": "warn", "✗": "error"}


class StatusLine(Message, widgets.HTML):
    """One line of progress text ("creating · 12 s"); a warning icon colours it."""

    def set(self, text: str, *, icon: str = "") -> None:
        body = f"{icon} {html.escape(text)}".strip()
        tone = _ICON_TONE.get(icon)
        self.value = styled(body, tone) if tone else body

    def clear(self) -> None:
        self.value = ""


class Notice(Message, widgets.HTML):
    """A block of HTML an action shows (a diff, the API's message); cleared by the next."""

    def clear(self) -> None:
        self.value = ""


def clear_messages(*roots: widgets.Widget) -> None:
    """Empty every :class:`Message` among ``roots`` and their descendants."""
    for root in roots:
        if isinstance(root, Message):
            root.clear()
        clear_messages(*getattr(root, "children", ()))


def action(*parts: str) -> Callable[[F], F]:
    """Mark a widget method as an action: it starts by clearing what the last one left.

    Without ``parts`` every message of the widget is cleared; with them, only
    those under the named attributes (``@action("after", "errors")``).
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            clear_messages(*([getattr(self, p) for p in parts] if parts else [self]))
            return method(self, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
