"""The backups list: ``GET …/postgres/{postgresId}/backups``, a page at a time.

The live API has this operation although the shipped spec file does not
(docs/api-behaviour.md, "Backups list"). Known: ``limit`` (1–100, default
100), an opaque ``cursor`` taken from a previous answer's ``nextCursor``, and
an answer that is the usual envelope plus ``limit``, ``totalCount`` and
``nextCursor`` (null on the last page), the backups newest first. The item's
fields are ``key``, ``status`` and ``lastModified``, the names clickhousectl
0.5.0 reads; ``startedAt`` and ``sizeInBytes`` are the sandbox's additions.

The cursor is the position after the page's last backup (its end time and key)
with the service's id, so a page follows on correctly while new backups arrive
(they come first) or old ones are pruned, and a cursor of another service is a
400. It is opaque to clients: base64url of a small JSON document.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.wire import bad_request, envelope, parse_int
from pgcloud_nb.sandbox.services.catalog import BackupEntry
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle

__all__ = ["BackupRoutes", "backup_item"]

MAX_LIMIT = 100
_CURSOR_CHARS = 512  # far more than any cursor this module makes


def _timestamp(entry_time: Any) -> str:
    # RFC 3339 with milliseconds, as the API's other timestamps (docs/api-behaviour.md).
    return str(entry_time.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def backup_item(entry: BackupEntry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "status": entry.status,
        "lastModified": _timestamp(entry.ended),
        "startedAt": _timestamp(entry.started),
        "sizeInBytes": entry.size_bytes,
    }


def _position(entry: BackupEntry) -> tuple[float, str]:
    return entry.ended.timestamp(), entry.key


def make_cursor(service_id: str, entry: BackupEntry) -> str:
    ended, key = _position(entry)
    raw = json.dumps({"s": service_id, "t": ended, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read_cursor(service_id: str, cursor: str) -> tuple[float, str]:
    """The position a cursor names; a 400 naming ``cursor`` for anything we did not make."""
    refused = bad_request(
        "BAD_REQUEST: cursor: not a cursor of this service's backups list"
        " (pass a previous answer's nextCursor unchanged)"
    )
    if not cursor or len(cursor) > _CURSOR_CHARS:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise refused from None
    if not isinstance(data, dict) or data.get("s") != service_id:
        raise refused
    ended, key = data.get("t"), data.get("k")
    if not isinstance(ended, int | float) or isinstance(ended, bool) or not isinstance(key, str):
        raise refused
    return float(ended), key


class BackupRoutes:
    def __init__(self, access: Access, life: Lifecycle) -> None:
        self.access = access
        self.life = life

    async def list_backups(self, request: Request) -> Response:
        row = self.access.service(request)
        limit = parse_int(request, "limit", minimum=1, maximum=MAX_LIMIT) or MAX_LIMIT
        cursors = request.query_params.getlist("cursor")
        if len(cursors) > 1:
            raise bad_request("BAD_REQUEST: cursor: given more than once")
        after = read_cursor(row.id, cursors[0]) if cursors else None
        entries = sorted(await self.life.backups(row), key=_position, reverse=True)
        # Newest first: (end, key) descending; a page goes on below the cursor's position.
        rest = [e for e in entries if after is None or _position(e) < after]
        page = rest[:limit]
        more = len(rest) > limit
        body = {
            **envelope(200, result=[backup_item(e) for e in page]),
            "limit": limit,
            "totalCount": len(entries),
            "nextCursor": make_cursor(row.id, page[-1]) if more else None,
        }
        return JSONResponse(body)
