"""Another OS user gets nothing: no socket folder they made is used, no link they planted is
followed, and nothing the sandbox keeps is open to them. Real servers, real folders.

The attacker is modelled by what another user can do: make any name directly in
/tmp before the sandbox starts (here made as root and handed to ``nobody``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port
from pgcloud_nb.sandbox.postgres.osuser import chown_tree, pg_user, usable_clusters_dir

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


@pytest.fixture
def clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clusters folder, and a run folder for long socket paths of this test's own."""
    prefix = f"/tmp/pgcloud-nb-test-{uuid.uuid4().hex}-"
    with contextlib.suppress(ImportError):
        from pgcloud_nb.sandbox.postgres import private

        monkeypatch.setattr(private, "RUN_PREFIX", prefix)
    made = usable_clusters_dir(tmp_path / "clusters")
    yield made
    shutil.rmtree(made.resolve(), ignore_errors=True)
    for run in Path("/tmp").glob(Path(prefix).name + "*"):
        _remove_planted(run)


def _deep(clusters: Path) -> Cluster:
    """A cluster whose own socket path would overflow sockaddr_un (as in a user's home)."""
    root = clusters / ("deep-" + "x" * 60) / secrets.token_hex(8)
    root.parent.mkdir(exist_ok=True)
    cluster = Cluster(root, free_port())
    assert not str(cluster.socket_dir).startswith(str(cluster.root))
    return cluster


def _in_tmp(path: Path) -> Path:
    """The first folder of ``path`` that anyone may create: a direct child of /tmp."""
    while path.parent != Path("/tmp"):
        path = path.parent
    return path


def _nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def _remove_planted(path: Path) -> None:
    """Remove what a test planted: only ever a pgcloud-nb name directly in /tmp."""
    assert path.parent == Path("/tmp") and path.name.startswith("pgcloud-nb-"), path
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _cleanup(cluster: Cluster, *planted: Path) -> None:
    cluster.remove()
    for path in planted:
        _remove_planted(path)


@root_only
def test_a_socket_folder_made_by_another_user_is_refused(clusters: Path) -> None:
    cluster = _deep(clusters)
    planted = _in_tmp(cluster.socket_dir)
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    os.chown(planted, _nobody().pw_uid, _nobody().pw_gid)
    try:
        with pytest.raises(EngineError, match="refusing"):
            cluster.init("Pw1" + secrets.token_urlsafe(12), hostnames=["localhost"])
            cluster.start()
        assert not cluster.is_running()
        assert planted.stat().st_uid == _nobody().pw_uid  # never taken over either
    finally:
        _cleanup(cluster, planted)


@root_only
def test_a_planted_symlink_is_never_followed(clusters: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "root-file").write_text("root's")
    cluster = _deep(clusters)
    planted = _in_tmp(cluster.socket_dir)
    planted.symlink_to(victim, target_is_directory=True)
    try:
        with pytest.raises(EngineError, match="refusing"):
            cluster.init("Pw1" + secrets.token_urlsafe(12), hostnames=["localhost"])
            cluster.start()
        assert not cluster.is_running()
        for path in (victim, victim / "root-file"):
            assert path.stat().st_uid == 0, path  # root's chown went nowhere
    finally:
        _cleanup(cluster, planted)


def test_a_deep_cluster_keeps_its_socket_in_a_private_folder(clusters: Path) -> None:
    cluster = _deep(clusters)
    try:
        cluster.init("Pw1" + secrets.token_urlsafe(12), hostnames=["localhost"])
        cluster.start()
        with cluster.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        user = pg_user()
        for folder in (cluster.socket_dir, cluster.socket_dir.parent):
            st = folder.lstat()
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == user.pw_uid, folder
            assert stat.S_IMODE(st.st_mode) == 0o700, folder
        assert len(str(cluster.socket_dir / f".s.PGSQL.{cluster.port}")) < 107
    finally:
        _cleanup(cluster)  # the run folder goes with the fixture


def test_private_folders_refuse_anything_else(tmp_path: Path) -> None:
    from pgcloud_nb.sandbox.errors import UnsafePathError
    from pgcloud_nb.sandbox.postgres.private import private_dir

    me = (os.geteuid(), os.getegid())
    made = private_dir(tmp_path / "new", owner=me)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert private_dir(made, owner=me) == made  # an existing, proper one is fine
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(made)
    file = tmp_path / "file"
    file.write_text("")
    for path, words in ((loose, "mode 0755"), (link, "symlink"), (file, "not a folder")):
        with pytest.raises(UnsafePathError, match=words) as caught:
            private_dir(path, owner=me)
        assert str(path) in str(caught.value) and "0700" in str(caught.value)
    if os.geteuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, _nobody().pw_uid, _nobody().pw_gid)
        with pytest.raises(UnsafePathError, match="owned by uid"):
            private_dir(other, owner=me)


@root_only
def test_chown_tree_follows_no_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_text("")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "to-victim").symlink_to(victim, target_is_directory=True)
    (tree / "file-link").symlink_to(victim / "f")
    chown_tree(tree)
    uid = pg_user().pw_uid
    assert (tree / "sub").stat().st_uid == uid
    assert (tree / "file-link").lstat().st_uid == uid  # the link itself, not its target
    assert victim.stat().st_uid == 0 and (victim / "f").stat().st_uid == 0
    top_link = tmp_path / "top-link"
    top_link.symlink_to(victim, target_is_directory=True)
    with pytest.raises(EngineError):
        chown_tree(top_link)
    assert victim.stat().st_uid == 0 and (victim / "f").stat().st_uid == 0


def test_a_loose_home_is_made_private(tmp_path: Path) -> None:
    from pgcloud_nb.sandbox.postgres.hardening import harden_clusters

    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    for path, mode in ((home, 0o755), (home / "notes", 0o777)):
        path.chmod(mode)
    (home / "credentials.json").write_text("{}")
    (home / "credentials.json").chmod(0o644)
    (home / "notes" / "run.sh").write_text("")
    (home / "notes" / "run.sh").chmod(0o755)
    clusters = usable_clusters_dir(home / "clusters")
    (clusters / ".backups" / "svc").mkdir(parents=True)
    (clusters / ".backups").chmod(0o755)
    (clusters / "svc").mkdir(mode=0o700)
    (clusters / "svc" / "ca.pem").write_text("")
    (clusters / "svc" / "ca.pem").chmod(0o644)
    try:
        SandboxHome(home).ensure()
        harden_clusters(clusters)
        modes = {
            p: stat.S_IMODE(p.lstat().st_mode)
            for p in [home, *home.rglob("*"), *clusters.resolve().rglob("*")]
            if not p.is_symlink()
        }
        assert {str(p): oct(m) for p, m in modes.items() if m & 0o077} == {}
        assert modes[home / "notes" / "run.sh"] == 0o700  # still runnable by its owner
        backups = (clusters / ".backups").resolve().lstat()
        assert backups.st_uid == pg_user().pw_uid
        assert {p.name for p in home.iterdir()} >= {"server.log", "server.lock"}
    finally:
        shutil.rmtree(clusters.resolve(), ignore_errors=True)


@root_only
def test_a_home_of_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "theirs"
    home.mkdir(mode=0o700)
    os.chown(home, _nobody().pw_uid, _nobody().pw_gid)
    with pytest.raises(EngineError, match="owned by uid"):
        SandboxHome(home).ensure()


@root_only
def test_the_clusters_folder_is_crossable_by_the_servers_group_only(tmp_path: Path) -> None:
    made = usable_clusters_dir(tmp_path / "c")
    try:
        real = made.resolve()
        st = real.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, pg_user().pw_gid, 0o710)
    finally:
        shutil.rmtree(made.resolve(), ignore_errors=True)
