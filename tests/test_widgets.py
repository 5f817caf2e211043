"""The forms without a kernel: set ``.value``, ``.click()``, then look at the sandbox.

Every effect is checked through the API (a service created, tags changed, config
applied, a service deleted), refusals are checked to send nothing, and the
async path (the one a kernel takes) is run on a real asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets.widgets.widget as widget_module
import pytest

from pgcloud_nb.client import Client
from pgcloud_nb.errors import NotFoundError
from pgcloud_nb.jobs import ErrorPanel, run_job
from pgcloud_nb.models import PostgresService
from pgcloud_nb.spec import FieldError
from pgcloud_nb.widgets import (
    ConfigEditor,
    CreateForm,
    DeleteButton,
    FleetTable,
    ServicePicker,
    TagEditor,
    write_connection_details,
)
from pgcloud_nb.widgets.inputs import config_value, parse_config_text, route_errors

pytestmark = pytest.mark.timeout(300)


def _running(pg: Client, name: str, **kw: Any) -> PostgresService:
    kw.setdefault("region", "us-east-1")
    svc = pg.create_service(name=name, size="r8gd.large", **kw)
    return pg.wait(svc.id, progress=False)


@pytest.fixture
def service(pg: Client) -> Iterator[PostgresService]:
    """A running service for one test, deleted afterwards."""
    svc = _running(pg, f"w-{uuid.uuid4().hex[:6]}", tags={"team": "data"})
    yield svc
    with contextlib.suppress(NotFoundError):
        pg.delete_service(svc.id)


def _all_widget_state() -> str:
    """Every live widget's synced state, as one string (what a browser could ever see)."""
    states = []
    for w in list(widget_module._instances.values()):
        states.append(json.dumps(w.get_state(), default=str))
    return "\n".join(states)


# -- the create form -------------------------------------------------------------------


def test_create_form_fields_come_from_the_spec(pg: Client) -> None:
    form = CreateForm(pg)
    assert set(form.provider.options) == {"aws", "gcp"}
    assert set(form.version.options) == {"18", "17"}
    assert set(form.ha_type.options) == {"none", "async", "sync"}
    assert "us-east-1" in form.region.options
    assert form.family.value == "r8gd"
    assert any(label.startswith("r8gd.large · 2 vCPU · 16 GiB") for label, _ in form.size.options)
    form.provider.value = "gcp"
    assert all("-" in size for _, size in form.size.options)
    assert "us-central1" in form.region.options
    form.region.value = "my-own-region-1"  # typed, and refused as the API refuses it
    body, errors = form.body()
    assert body["region"] == "my-own-region-1"
    assert [e.field for e in errors if "not a region" in e.message] == ["region"]


def test_create_form_refuses_bad_input_beside_each_field(pg: Client) -> None:
    form = CreateForm(pg)
    before = pg.request_count
    form.submit.click()
    assert form.labels["name"].text == "Name is required"
    assert form.labels["region"].text == "Region is required"
    form.name.value = "x" * 51
    form.region.value = "us-east-1"
    form.tags.add("bad key!", "v")
    form.pg_config.value = "max_connections=0\nno_such_key=1\nnot a pair"
    form.submit.click()
    assert form.labels["name"].text == "Name is 51 characters; the limit is 50"
    assert form.labels["region"].text == ""  # fixed: its error went at once
    assert form.tags.error_labels()["tags[0]"].text == (
        "Tag key 'bad key!' may hold only letters, digits, '.', '_' and '-'"
    )
    config_errors = form.labels["pgConfig"].text
    assert "max_connections must be at least 1 (it is 0)" in config_errors
    assert "no_such_key is not a setting the API accepts" in config_errors
    assert "line 3: expected key=value" in config_errors
    assert "not sent" in form.status.value
    assert pg.request_count == before  # nothing was sent
    assert form.service is None


def test_create_form_creates_waits_and_keeps_the_password_hidden(
    pg: Client, tmp_path: Path
) -> None:
    form = CreateForm(pg, env_file=tmp_path / ".env")
    name = f"form-{uuid.uuid4().hex[:6]}"
    form.name.value = name
    form.region.value = "eu-west-1"
    form.size.value = "r8gd.large"
    form.version.value = "17"
    form.tags.add("env", "test")
    form.pg_config.value = "max_connections=42"
    form.submit.click()  # no loop: the create and the wait run inside click()
    assert form.errors.outputs == (), form.errors.text
    assert form.result is not None and form.result.state == "running"
    assert "running" in form.status.value
    svc = pg.get_service(form.result.id)
    assert (svc.name, svc.region, svc.postgres_version) == (name, "eu-west-1", "17")
    assert svc.tags_dict == {"env": "test"}
    assert pg.get_config(svc.id).pg_config["max_connections"] == "42"

    assert form.service is not None
    password = form.service.reveal_password()
    assert password and len(password) >= 12
    assert password not in _all_widget_state()
    assert password not in repr(form.service) and password not in repr(form)

    # 1. a private file with libpq's names
    target = tmp_path / "creds.env"
    form.credentials_path.value = str(target)
    form.write_file.click()
    assert form.errors.outputs == (), form.errors.text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert f"PGPASSWORD={password}" in text or f"PGPASSWORD='{password}'" in text
    assert "DATABASE_URL=" in text and "PGPORT=" in text
    assert password not in form.credentials_status.value

    # 2. .env: merged, other lines kept, mode 0600
    env = tmp_path / ".env"
    env.write_text("CLICKHOUSE_ORG_ID=abc\n")
    env.chmod(0o644)
    form.write_env.click()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    lines = env.read_text().splitlines()
    assert "CLICKHOUSE_ORG_ID=abc" in lines
    prefix = "PGCLOUD_" + name.upper().replace("-", "_") + "_"
    assert any(line.startswith(prefix + "PASSWORD=") for line in lines)
    form.write_env.click()  # again: replaced, not duplicated
    assert sum(line.startswith(prefix + "PASSWORD=") for line in env.read_text().splitlines()) == 1

    # 3. a psycopg connection
    form.open_connection.click()
    assert form.connection is not None
    with form.connection as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("42",)
    assert password not in _all_widget_state()
    pg.delete_service(svc.id)


def test_create_form_runs_as_a_task_when_a_loop_runs(pg: Client) -> None:
    """In a kernel the click returns at once and the wait is a task on the loop."""
    form = CreateForm(pg)
    form.name.value = f"async-{uuid.uuid4().hex[:6]}"
    form.region.value = "us-west-2"

    async def scenario() -> None:
        form.submit.click()
        task = form.task
        assert task is not None and not task.done()  # the callback did not block
        assert form.submit.disabled
        await asyncio.wait_for(form.finished(), 120)

    asyncio.run(scenario())
    assert form.errors.outputs == (), form.errors.text
    assert form.result is not None and form.result.state == "running"
    # Done: the button stays off, and a second click (or call) sends nothing.
    assert form.submit.disabled and form.submit.description == "Created"
    before = pg.request_count
    form.create()
    assert pg.request_count == before and "already" in form.status.value
    pg.delete_service(form.result.id)


def test_create_form_shows_the_api_error_with_request_id(pg: Client) -> None:
    form = CreateForm(pg)
    form.name.value = "size from the future"
    form.region.value = "us-east-1"
    form.size.options = [*form.size.options, ("m99.huge", "m99.huge")]
    form.size.value = "m99.huge"
    # The spec refuses it before sending...
    form.submit.click()
    assert form.labels["size"].text.startswith("'m99.huge' is not a size the API offers")
    # ...and when the check is bypassed, the API's own 400 shows, with its requestId.
    form.validate = lambda: []  # type: ignore[method-assign]
    form.submit.click()
    shown = form.errors.text
    assert "BadRequestError 400" in shown and "requestId" in shown
    assert pg.last_request_id and pg.last_request_id in shown
    assert not form.submit.disabled  # nothing was made: the form may be sent again


# -- picker, tags, config, delete -----------------------------------------------------------


def test_picker_refreshes(pg: Client, service: PostgresService) -> None:
    picker = ServicePicker(pg)
    assert service.id in picker.services
    other = _running(pg, "picked-later")
    assert other.id not in picker.services
    picker.refresh_button.click()
    assert other.id in [value for _, value in picker.dropdown.options]
    picker.value = other.id
    pg.delete_service(other.id)
    pg.wait_gone(other.id, progress=False)
    picker.refresh_button.click()
    assert picker.value != other.id


def test_tag_editor_shows_the_diff_and_patches(pg: Client, service: PostgresService) -> None:
    editor = TagEditor(pg, service.id)
    assert editor.rows.as_dict() == {"team": "data"}
    editor.rows.fields()[0][1].value = "platform"  # edit
    editor.rows.add("env", "prod")  # add
    assert editor.preview() == ["+ env=prod", "~ team: data → platform"]
    assert '"tags"' in editor.diff.value
    editor.apply_button.click()
    assert pg.get_service(service.id).tags_dict == {"team": "platform", "env": "prod"}
    editor.rows.remove("team")  # remove
    editor.apply_button.click()
    assert "- team=platform" in editor.diff.value
    assert pg.get_service(service.id).tags_dict == {"env": "prod"}
    before = pg.request_count
    editor.apply_button.click()
    assert "no changes" in editor.status.value and pg.request_count == before


def test_tag_editor_refuses_bad_tags(pg: Client, service: PostgresService) -> None:
    editor = TagEditor(pg, service.id)
    before = pg.request_count
    editor.rows.add("chc ok?", "")
    editor.apply_button.click()
    labels = editor.rows.error_labels()
    assert "may hold only letters" in labels["tags[1]"].text
    editor.rows.remove("chc ok?")
    editor.rows.add("team", "again")
    editor.apply_button.click()
    assert "duplicate tag key(s): team" in editor.form_error.text
    assert pg.request_count == before
    assert pg.get_service(service.id).tags_dict == {"team": "data"}


def test_config_editor_patches_only_changed_keys_and_restarts(
    pg: Client, service: PostgresService, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = ConfigEditor(pg, service.id)
    assert editor.current  # the sandbox shows max_connections when nothing is set
    sent: list[dict[str, Any]] = []
    real = pg.patch_config

    def spy(service_id: str, **kw: Any) -> Any:
        sent.append(kw)
        return real(service_id, **kw)

    monkeypatch.setattr(pg, "patch_config", spy)
    editor.set(max_connections=64, work_mem="8MB")
    before = pg.request_count
    body = editor.dry_run()
    assert body == {"pgConfig": {"max_connections": 64, "work_mem": "8MB"}, "pgBouncerConfig": {}}
    assert "→" in editor.diff.value and pg.request_count == before  # a dry run sends nothing
    editor.apply_button.click()
    assert editor.errors.outputs == (), editor.errors.text
    assert sent == [{"pg_config": {"max_connections": 64, "work_mem": "8MB"}}]
    config = pg.get_config(service.id).pg_config
    assert (config["max_connections"], config["work_mem"]) == ("64", "8MB")
    assert "restart" in editor.message.value  # the API's own message
    assert not editor.restart_button.disabled
    assert editor.proposed["max_connections"].value == "64"  # reloaded
    editor.restart_button.click()
    assert "running" in editor.status.value, editor.errors.text
    assert pg.get_service(service.id).state == "running"
    with pg.connect_service(service.id) as conn:  # the restart applied it
        assert conn.execute("SHOW max_connections").fetchone() == ("64",)


def test_config_editor_refuses_invalid_values(pg: Client, service: PostgresService) -> None:
    editor = ConfigEditor(pg, service.id)
    before = pg.request_count
    editor.set(default_transaction_isolation="sometimes", max_slot_wal_keep_size=-1)
    editor.apply_button.click()
    assert editor.labels["default_transaction_isolation"].text.startswith(
        "'sometimes' is not allowed for default_transaction_isolation: choose one of"
    )
    assert 'quote it: "-1"' in editor.labels["max_slot_wal_keep_size"].text
    assert "not sent" in editor.status.value and pg.request_count == before
    editor.set(default_transaction_isolation="serializable", max_slot_wal_keep_size='"-1"')
    editor.apply_button.click()
    assert editor.errors.outputs == (), editor.errors.text
    assert pg.get_config(service.id).pg_config["max_slot_wal_keep_size"] == "-1"
    editor.apply_button.click()
    assert "no changes" in editor.status.value


def test_delete_with_the_wrong_name_does_nothing(pg: Client, service: PostgresService) -> None:
    button = DeleteButton(pg, service.id)
    before = pg.request_count
    button.confirm.value = service.name + "x"
    button.button.click()
    assert "nothing was deleted" in button.errors.text
    assert pg.request_count == before
    assert pg.get_service(service.id).state == "running"


def test_delete_waits_until_gone_and_refreshes_the_picker(
    pg: Client, service: PostgresService
) -> None:
    picker = ServicePicker(pg)
    picker.value = service.id
    button = DeleteButton(pg, picker)
    assert service.name in button.prompt.value
    button.confirm.value = service.name
    button.button.click()
    assert "gone" in button.status.value, button.errors.text
    with pytest.raises(NotFoundError):
        pg.get_service(service.id)
    assert service.id not in picker.services


def test_editors_follow_the_picker(pg: Client, service: PostgresService) -> None:
    other = _running(pg, "second", tags={"k": "v"})
    picker = ServicePicker(pg)
    picker.value = service.id
    editor = TagEditor(pg, picker)
    assert editor.rows.as_dict() == {"team": "data"}
    picker.value = other.id
    assert editor.rows.as_dict() == {"k": "v"}
    pg.delete_service(other.id)


def test_errors_in_callbacks_show_with_status_message_and_request_id(pg: Client) -> None:
    missing = str(uuid.uuid4())
    editor = TagEditor(pg, missing)  # load() fails: shown, not raised
    shown = editor.errors.text
    assert "NotFoundError 404" in shown and "requestId" in shown
    assert isinstance(editor.errors.last, NotFoundError)
    assert editor.errors.last.request_id and editor.errors.last.request_id in shown
    first = editor.errors.last
    editor.rows.add("a", "b")
    editor.apply_button.click()  # the PATCH fails too, and shows
    assert editor.errors.last is not first and isinstance(editor.errors.last, NotFoundError)
    assert "PATCH" in editor.errors.text and editor.errors.last.request_id in editor.errors.text


# -- the fleet table ------------------------------------------------------------------


def test_fleet_table_filters_and_sorts(pg: Client, service: PostgresService) -> None:
    extra = _running(pg, "zz-fleet", region="ap-northeast-2")
    table = FleetTable(pg)
    ids = set(table.frame["id"])
    assert {service.id, extra.id} <= ids
    table.filter.value = "ap-northeast"
    assert list(table.view()["id"]) == [extra.id]
    assert "zz-fleet" in table.table.value and service.name not in table.table.value
    table.filter.value = ""
    table.sort_by.value = "name"
    table.ascending.value = False
    names = list(table.view()["name"])
    assert names == sorted(names, reverse=True)
    table.state.value = "deleting"
    assert table.view().empty or set(table.view()["state"]) == {"deleting"}
    pg.delete_service(extra.id)


def test_fleet_auto_refresh_needs_a_loop_and_keeps_to_the_budget(pg: Client) -> None:
    table = FleetTable(pg, interval=0.05)
    table.auto.value = True  # no loop here: refused, visibly
    assert not table.auto.value and "needs a running asyncio loop" in table.errors.text

    async def scenario() -> int:
        table.errors.clear()
        table.auto.value = True
        deadline = asyncio.get_running_loop().time() + 20
        while table.refreshes < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        table.close()  # closing stops the task
        await asyncio.sleep(0)
        assert table.task is None or table.task.done()
        return table.refreshes

    assert asyncio.run(scenario()) >= 3, table.errors.text


# -- pieces -----------------------------------------------------------------------------


def test_config_value_reads_like_clickhousectl() -> None:
    assert config_value("200") == 200
    assert config_value("1.1") == 1.1
    assert config_value('"-1"') == "-1"
    assert config_value("64MB") == "64MB"
    assert config_value("true") == "true"
    assert parse_config_text("# c\n\nwork_mem = 4MB\n")[0] == {"work_mem": "4MB"}


def test_route_errors_puts_each_error_by_its_field() -> None:
    from pgcloud_nb.widgets.inputs import ErrorLabel

    labels = {"tags": ErrorLabel(), "tags[1]": ErrorLabel(), "name": ErrorLabel()}
    fallback = ErrorLabel()
    route_errors(
        [
            FieldError("tags[1].key", "bad"),
            FieldError("tags", "too many"),
            FieldError("name", "short"),
            FieldError("other", "odd"),
        ],
        labels,
        fallback,
    )
    assert labels["tags[1]"].text == "tags[1].key: bad"
    assert labels["tags"].text == "too many"
    assert labels["name"].text == "short"
    assert fallback.text == "other: odd"


def test_write_connection_details_without_a_connection_string(tmp_path: Path) -> None:
    svc = PostgresService.model_validate(
        {
            "id": str(uuid.uuid4()),
            "name": "n",
            "hostname": "h.example",
            "username": "postgres",
            "password": "Secret-Pass-1234",
        }
    )
    target = tmp_path / "sub" / "c.env"
    names = write_connection_details(svc, target)
    assert names == ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "PGPORT=5432" in target.read_text()
    with pytest.raises(ValueError, match="no credentials"):
        write_connection_details(svc.without_secrets(), target)


def test_run_job_reports_errors_from_both_paths() -> None:
    panel = ErrorPanel()

    def job() -> Any:
        yield 0.0
        raise RuntimeError("boom")

    run_job(job(), panel)
    assert "RuntimeError" in panel.text and "boom" in panel.text

    async def in_loop() -> None:
        task = run_job(job(), panel)
        assert task is not None
        await task

    panel.clear()
    asyncio.run(in_loop())
    assert "boom" in panel.text
