"""Fixtures shared by the sandbox's HTTP tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from test_api import CREATE, result, wait_gone


@pytest.fixture
def make(api: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create services; each is deleted afterwards, the newest first (replicas before sources)."""
    made: list[str] = []

    def create(**extra: Any) -> dict[str, Any]:
        body = {**CREATE, "name": f"svc-{uuid.uuid4().hex[:6]}", **extra}
        created = result(api.post("/postgres", json=body))
        made.append(created["id"])
        return dict(created)

    yield create
    for sid in reversed(made):
        api.delete(f"/postgres/{sid}")
    for sid in made:
        wait_gone(api, sid, timeout=120)
