"""What the create form offers once the API has sent a password: write it to a
private file or to ``.env``, or open a connection; never show it.

Every file written is recorded in :attr:`CredentialsBox.files` (path → the
variable names written), so a notebook's clean-up cell can list them and
:meth:`CredentialsBox.remove` can take them away again: a file the box created
is deleted, a file it merged into (``.env``) loses only the lines it added.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import ErrorPanel, StatusLine, action, guarded
from ..models import PostgresService
from .inputs import env_prefix, remove_connection_details, write_connection_details

if TYPE_CHECKING:
    import psycopg

__all__ = ["CredentialsBox"]

_WIDE = widgets.Layout(width="30em")
_AUTO = widgets.Layout(width="auto")


class CredentialsBox(widgets.VBox):
    """The "connection details" part of the create form, hidden until a create answers.

    ``created()`` returns the create response (with its secrets), or raises when
    there is none yet; ``connect`` opens a psycopg connection from it.
    """

    def __init__(
        self,
        created: Callable[[], PostgresService],
        connect: Callable[[PostgresService], psycopg.Connection[Any]],
        env_file: str | os.PathLike[str],
        errors: ErrorPanel,
    ) -> None:
        self._created = created
        self._connect = connect
        self.env_file = env_file
        self.errors = errors
        self.files: dict[Path, list[str]] = {}  # written: path → variable names (never values)
        self._made: set[Path] = set()  # of those, the files that did not exist before
        self.connection: psycopg.Connection[Any] | None = None
        self.path = widgets.Text(
            description="file", style={"description_width": "8em"}, layout=_WIDE
        )
        self.write_file = widgets.Button(
            description="Write to 0600 file", icon="lock", layout=_AUTO
        )
        self.write_env = widgets.Button(
            description=f"Add to {os.fspath(env_file)}", icon="file", layout=_AUTO
        )
        self.open_connection = widgets.Button(
            description="Open psycopg connection", icon="plug", layout=_AUTO
        )
        self.status = StatusLine()
        guard = guarded(errors)
        self.write_file.on_click(guard(lambda _: self.save()))
        self.write_env.on_click(guard(lambda _: self.save_to_env()))
        self.open_connection.on_click(guard(lambda _: self.connect()))
        super().__init__(
            [
                widgets.HTML(
                    "<b>Connection details</b> (the API sends the password once; "
                    "it is kept, masked, and never displayed)"
                ),
                widgets.HBox([self.path, self.write_file]),
                widgets.HBox([self.write_env, self.open_connection]),
                self.status,
            ],
            layout=widgets.Layout(display="none"),
        )

    def offer(self, service: PostgresService) -> None:
        """Show the box for a service the API just created, with a file name for it."""
        self.path.value = f"{env_prefix(service.name or service.id).lower()[:-1]}.env"
        self.layout.display = None

    def hide(self) -> None:
        self.layout.display = "none"
        self.status.clear()

    def _record(self, target: Path, names: list[str], existed: bool) -> None:
        key = target.resolve()
        if not existed and key not in self.files:
            self._made.add(key)
        self.files[key] = sorted({*self.files.get(key, []), *names})

    @action("status", "errors")
    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write libpq's ``PG*`` variables and ``DATABASE_URL`` to a mode-0600 file."""
        target = os.fspath(path if path is not None else self.path.value.strip())
        if not target:
            raise ValueError("give a file name for the connection details")
        existed = Path(target).expanduser().exists()
        names = write_connection_details(self._created(), target)
        self._record(Path(target).expanduser(), names, existed)
        self.status.set(f"wrote {', '.join(names)} to {target} (mode 0600)", icon="✓")
        return target

    @action("status", "errors")
    def save_to_env(self) -> str:
        """Merge ``PGCLOUD_<NAME>_*`` variables into the ``.env`` file (mode 0600)."""
        svc = self._created()
        target = Path(self.env_file).expanduser()
        existed = target.exists()
        names = write_connection_details(svc, target, prefix=env_prefix(svc.name or svc.id))
        self._record(target, names, existed)
        self.status.set(
            f"wrote {', '.join(names)} to {os.fspath(self.env_file)} (mode 0600)", icon="✓"
        )
        return os.fspath(self.env_file)

    @action("status", "errors")
    def connect(self) -> psycopg.Connection[Any]:
        """Open a psycopg connection with the credentials from the create response."""
        self.connection = self._connect(self._created())
        info = self.connection.info
        self.status.set(
            f"connected as {info.user}@{info.host}:{info.port}/{info.dbname} "
            f"(PostgreSQL {info.server_version // 10000}); use form.connection",
            icon="✓",
        )
        return self.connection

    def remove(self) -> list[Path]:
        """Take back every credential written: delete the files this box created, and
        remove only its own lines from files it merged into. Returns the paths touched."""
        touched = []
        for path, names in list(self.files.items()):
            if path in self._made:
                path.unlink(missing_ok=True)
            else:
                remove_connection_details(path, names)
            touched.append(path)
            del self.files[path]
        self._made.clear()
        return touched
