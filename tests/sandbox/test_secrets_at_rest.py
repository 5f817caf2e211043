"""No password reaches the disk in plaintext: not the store, its WAL, the logs (the
sandbox's and PostgreSQL's), state files, backups or restores.

The end-to-end test makes services (one of them cut short by a ``kill -9`` while
its password waits in the store), resets passwords, restores, then reads every
file under the sandbox home and the clusters folder (which lives elsewhere when
the home is private) looking for each password the API returned or was given,
plain, base64 (at every alignment) and hex. The store's own tests check the
sealing and the one-time rewrite of a home made before it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from test_api import CREATE, org_client, result, wait_state

from pgcloud_nb.sandbox import Sandbox, Settings
from pgcloud_nb.sandbox.secretbox import KEY_FIELD, SecretBox, UnreadableSecret, home_box
from pgcloud_nb.sandbox.store import ServiceRow, Store

# -- finding a secret in files


def forms(secret: str) -> set[bytes]:
    """``secret`` as it could sit in a file: plain, hex, and base64 at each of the three
    alignments it can take inside a longer base64 text (standard and URL-safe)."""
    raw = secret.encode()
    found = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + raw)
            # Only the characters whose 6 bits all come from ``raw``: the others also
            # carry the neighbouring bytes' bits.
            found.add(text[-(-8 * pad // 6) : 8 * (pad + len(raw)) // 6])
    return {f for f in found if len(f) >= 8}


def every_file(*roots: Path) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        for folder, _, names in os.walk(root.resolve(), followlinks=False):
            for name in names:
                path = Path(folder, name)
                if path.is_symlink() or not path.is_file() or path in seen:
                    continue  # sockets and pipes hold no bytes
                seen.add(path)
                yield path


def hits(secrets: list[str], *roots: Path) -> tuple[int, list[str]]:
    """(files read, where any form of any secret was found)."""
    needles = {form: secret for secret in secrets for form in forms(secret)}
    read, found = 0, []
    for path in every_file(*roots):
        try:
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError):  # removed meanwhile (a WAL segment)
            continue
        read += 1
        found += [f"{path}: {needles[n][:4]}…" for n in needles if n in data]
    return read, found


def test_the_search_finds_every_form(tmp_path: Path) -> None:
    secret = "Xq7-" + uuid.uuid4().hex
    blobs = [
        b"x" + secret.encode() + b"y",
        b"k=" + secret.encode().hex().encode(),
        base64.b64encode(b"postgres:" + secret.encode()),
        base64.urlsafe_b64encode(b"ab" + secret.encode() + b"cd"),
        base64.b64encode(b"a" + secret.encode()),
    ]
    for i, blob in enumerate(blobs):
        (tmp_path / f"f{i}").write_bytes(blob)
    found = hits([secret], tmp_path)
    assert found[0] == len(blobs)
    assert sorted({where.split(":")[0] for where in found[1]}) == [
        str(tmp_path / f"f{i}") for i in range(len(blobs))
    ]
    assert hits(["not-there-" + uuid.uuid4().hex], tmp_path)[1] == []


# -- the box and the store


def test_secretbox_seals_for_one_context() -> None:
    box = SecretBox(SecretBox.new_key())
    sealed = box.seal("Pa55word-abc", "service-1")
    assert SecretBox.is_sealed(sealed) and "Pa55word" not in sealed
    assert box.open(sealed, "service-1") == "Pa55word-abc"
    assert box.seal("Pa55word-abc", "service-1") != sealed  # a fresh nonce each time
    with pytest.raises(UnreadableSecret):
        box.open(sealed, "service-2")  # bound to its row
    with pytest.raises(UnreadableSecret):
        SecretBox(SecretBox.new_key()).open(sealed, "service-1")
    assert "key" in repr(box) and "***" in repr(box)


def test_the_key_is_kept_in_the_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text('{"org_id": "o", "key_id": "k", "key_secret": "s"}')
    creds.chmod(0o600)
    box = home_box(tmp_path)
    assert KEY_FIELD in creds.read_text() and creds.stat().st_mode & 0o777 == 0o600
    assert home_box(tmp_path).open(box.seal("x", "c"), "c") == "x"  # the same key, kept
    assert '"key_secret": "s"' in creds.read_text()


def row(service_id: str, port: int, password: str | None) -> ServiceRow:
    return ServiceRow(
        id=service_id,
        name="n",
        provider="aws",
        region="us-west-2",
        postgres_version="17",
        size="r8gd.large",
        ha_type="none",
        state="creating",
        created_at="2026-01-01T00:00:00+00:00",
        is_primary=True,
        hostname="h",
        username="postgres",
        port=port,
        pending_password=password,
    )


def test_store_keeps_pending_passwords_sealed(tmp_path: Path) -> None:
    box = SecretBox(SecretBox.new_key())
    store = Store(tmp_path / "state.db", box)
    password = "Pending-" + uuid.uuid4().hex
    store.insert(row("s1", 5001, password))
    assert store.get("s1").pending_password == password  # type: ignore[union-attr]
    assert store.update("s1", pending_password=None).pending_password is None  # type: ignore[union-attr]
    assert hits([password], tmp_path)[1] == []  # neither state.db nor its WAL
    store.close()


def test_a_home_made_before_sealing_is_rewritten_once(tmp_path: Path) -> None:
    """An older sandbox kept pending passwords in the clear, and a cleared one lingers in
    freed pages and the WAL: opening the store seals the one still pending and rewrites
    the file, so none is left anywhere."""
    box = SecretBox(SecretBox.new_key())
    Store(tmp_path / "state.db", box).close()
    pending, cleared = "Pending-" + uuid.uuid4().hex, "Cleared-" + uuid.uuid4().hex
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.execute("PRAGMA user_version = 0")  # as an older sandbox left it
    columns = "id, name, provider, region, postgres_version, size, ha_type, tags, state,"
    columns += " created_at, is_primary, hostname, username, port, pg_config,"
    columns += " pg_bouncer_config, pending_password, seq"
    for sid, port, password in (("old", 5002, pending), ("done", 5003, cleared)):
        db.execute(
            f"INSERT INTO services ({columns}) VALUES"
            " (?, 'n', 'aws', 'r', '17', 's', 'none', '[]', 'creating', 't', 1, 'h',"
            " 'postgres', ?, '{}', '{}', ?, 1)",
            (sid, port, password),
        )
    db.execute("UPDATE services SET pending_password = NULL, state = 'running' WHERE id = 'done'")
    assert len(hits([pending, cleared], tmp_path)[1]) >= 2  # today's leak, reproduced
    store = Store(tmp_path / "state.db", box)
    db.close()
    assert store.get("old").pending_password == pending  # type: ignore[union-attr]
    assert store.get("done").pending_password is None  # type: ignore[union-attr]
    assert hits([pending, cleared], tmp_path)[1] == []
    store.close()


# -- end to end


def test_no_password_in_any_file_of_the_home(tmp_path: Path, figures: dict[str, str]) -> None:
    tmp_path.chmod(0o755)
    home = tmp_path / "home"
    # The delay keeps a create in `creating` (its password waiting in the store) long
    # enough to kill the server then; short backups make a restore possible soon.
    settings = Settings(home=home, rate_limit=0, sample_interval=60, provisioning_delay=2)
    sb = Sandbox(home, settings)
    secrets: list[str] = []
    try:
        info = sb.start(timeout=120)
        with org_client(info) as api:
            first = result(api.post("/postgres", json={**CREATE, "name": "secrets-a"}))
            cut = result(api.post("/postgres", json={**CREATE, "name": "secrets-b"}))
            secrets += [first["password"], first["connectionString"], cut["password"]]
        os.kill(info.pid, signal.SIGKILL)  # while both wait to be running
        info = sb.start(timeout=120)
        with org_client(info) as api:
            for svc in (first, cut):
                wait_state(api, svc["id"], "running", timeout=120)
            sid = first["id"]
            generated = result(api.patch(f"/postgres/{sid}/password", json={}))["password"]
            chosen = "Chosen-" + uuid.uuid4().hex[:12] + "-Zz9"
            assert result(api.patch(f"/postgres/{sid}/password", json={"password": chosen})) == {}
            secrets += [generated, chosen]
            dsn = first["connectionString"].replace(first["password"], chosen)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE t AS SELECT 1 AS id")
            with psycopg.connect(cut["connectionString"]) as conn:  # the promised password
                assert conn.execute("SELECT 1").fetchone() == (1,)
            deadline = time.monotonic() + 120
            while not result(api.get(f"/postgres/{sid}")).get("earliestRestoreTime"):
                assert time.monotonic() < deadline, "no first base backup"
                time.sleep(0.2)
            target = datetime.now(UTC).isoformat()
            body = {"name": "secrets-restored", "restoreTarget": target}
            restored = result(api.post(f"/postgres/{sid}/restoredService", json=body))
            wait_state(api, restored["id"], "running", timeout=180)
            reset = result(api.patch(f"/postgres/{restored['id']}/password", json={}))
            secrets.append(reset["password"])
        clusters = (home / "clusters").resolve()
        files, running = hits(secrets, home, clusters)  # the WAL is live: the moment
        sb.stop()
        stopped = hits(secrets, home, clusters)[1]
        figures["files searched for service passwords (plain, base64, hex)"] = (
            f"{files}, hits: {len(running) + len(stopped)}"
        )
        assert running == [] and stopped == [], running + stopped
        # The sandbox's own secrets (its API key, the store's key) are in credentials.json
        # and nowhere else.
        creds = json.loads((home / "credentials.json").read_text())
        keys = hits([creds["key_secret"], creds[KEY_FIELD]], home, clusters)[1]
        where = {k.rsplit(": ", 1)[0] for k in keys}
        assert where == {str((home / "credentials.json").resolve())}, keys
    finally:
        sb.stop()
        shutil.rmtree((home / "clusters").resolve(), ignore_errors=True)
