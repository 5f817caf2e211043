"""The forms in a person's hands: no stale messages, a create form that cannot be sent
twice, problems in plain words, credential files that can be taken back, one-line
errors in the theme's colours, and a free kernel when the API is down.

Driven without a kernel (set ``.value``, ``.click()``, assert), against the
session's sandbox; the API-down cases use ``httpx.MockTransport`` raising
``ConnectError``, the one thing the sandbox cannot be made to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.mockapi import mock_client

from pgcloud_nb.client import Client
from pgcloud_nb.errors import NotFoundError
from pgcloud_nb.jobs import ErrorPanel, StatusLine
from pgcloud_nb.models import PostgresService
from pgcloud_nb.spec import prepare_in_background
from pgcloud_nb.widgets import ConfigEditor, CreateForm, ServicePicker, TagEditor
from pgcloud_nb.widgets.config import pending_restart

pytestmark = pytest.mark.timeout(300)
WIDGETS = Path(__file__).resolve().parent.parent / "pgcloud_nb" / "widgets"


@pytest.fixture(scope="module")
def service(pg: Client) -> Iterator[PostgresService]:
    """One running service for the module's tests, deleted afterwards."""
    svc = pg.create_service(
        name=f"forms-{uuid.uuid4().hex[:6]}", region="us-east-1", size="r8gd.large"
    )
    yield pg.wait(svc.id, progress=False)
    with contextlib.suppress(NotFoundError):
        pg.delete_service(svc.id)


# -- stale messages -------------------------------------------------------------------


def test_a_clean_dry_run_clears_the_last_refusal_and_the_last_400(
    pg: Client, service: PostgresService
) -> None:
    editor = ConfigEditor(pg, service.id)
    editor.set(default_transaction_isolation="sometimes", max_connections="abc")
    editor.apply_button.click()
    assert "2 invalid value(s)" in editor.status.value
    assert "'abc' is not a number" in editor.labels["max_connections"].text
    # the API's own 400, with the check bypassed once
    editor.set(default_transaction_isolation="serializable", max_connections="200")
    check = editor.check
    editor.check = lambda: []  # type: ignore[method-assign]
    editor.set(work_mem="1")  # below the API's minimum of 64
    editor.apply_button.click()
    assert "BadRequestError 400" in editor.errors.text
    editor.check = check  # type: ignore[method-assign]
    editor.set(work_mem="8MB")
    editor.dry_run_button.click()
    assert editor.errors.outputs == ()  # the last 400 is gone
    assert editor.status.value == "" and editor.form_error.text == ""
    assert all(label.text == "" for label in editor.labels.values())
    assert "→" in editor.diff.value and editor.message.value == ""


def test_a_fixed_value_loses_its_error_as_it_is_typed(pg: Client, service: PostgresService) -> None:
    editor = ConfigEditor(pg, service.id)
    before = pg.request_count
    editor.set(max_connections="abc", work_mem="lots")
    editor.apply_button.click()
    assert "2 invalid value(s)" in editor.status.value
    editor.set(max_connections="150")
    assert editor.labels["max_connections"].text == ""
    assert "1 invalid value(s)" in editor.status.value
    editor.set(work_mem="16MB")
    assert editor.status.value == "" and pg.request_count == before


def test_removing_the_duplicate_tag_removes_the_message(
    pg: Client, service: PostgresService
) -> None:
    editor = TagEditor(pg, service.id)
    editor.rows.add("team", "a")
    editor.rows.add("team", "b")
    editor.apply_button.click()
    assert "duplicate tag key(s): team" in editor.form_error.text
    assert "⚠" in editor.status.value
    editor.rows.remove("team")  # both go: nothing is duplicated any more
    assert editor.form_error.text == "" and editor.status.value == ""


def test_running_pending_and_proposed_stay_apart(pg: Client, service: PostgresService) -> None:
    editor = ConfigEditor(pg, service.id)
    running = editor._running_cells["max_connections"].value
    editor.set(max_connections=77)
    editor.apply_button.click()
    assert editor.errors.outputs == (), editor.errors.text
    assert "restart" in editor.message.value
    assert pending_restart(service.id)["max_connections"][1] == "77"
    assert editor._running_cells["max_connections"].value == running  # not yet running
    assert "77" in editor._pending_cells["max_connections"].value
    assert editor.proposed["max_connections"].value == "77"
    again = ConfigEditor(pg, service.id)  # a new editor knows what waits
    assert "77" in again._pending_cells["max_connections"].value
    editor.restart_button.click()
    assert "running" in editor.status.value, editor.errors.text
    assert editor._running_cells["max_connections"].value == "77"
    assert editor._pending_cells["max_connections"].value == ""
    assert pending_restart(service.id) == {}


# -- the create form ---------------------------------------------------------------------


def test_create_form_words_and_refusals_send_nothing(pg: Client, service: PostgresService) -> None:
    form = CreateForm(pg)
    before = pg.request_count
    form.submit.click()
    assert form.labels["name"].text == "Name is required"
    form.name.value = "x" * 60
    assert form.labels["name"].text == "Name is 60 characters; the limit is 50"  # checked as typed
    form.name.value = "fine name"
    assert form.labels["name"].text == ""
    form.region.value = "mars-north-1"
    assert form.labels["region"].text.startswith(
        "'mars-north-1' is not a region Managed Postgres serves on aws: choose one of us-east-1"
    )
    form.region.value = "us-east-1"
    form.pg_config.value = "max_connections=abc\nwork_mem=64mb"
    form.submit.click()
    text = form.labels["pgConfig"].text
    assert "pgConfig.max_connections: 'abc' is not a number" in text
    assert "pgConfig.work_mem: '64mb' is not a size" in text
    assert pg.request_count == before and form.service is None
    # a taken name: warned beside the field, and the first click sends nothing
    form.pg_config.value = ""
    form.name.value = service.name
    form.submit.click()
    assert "exists" in form.labels["name"].text and "warn" in form.labels["name"].value
    assert "click Create again" in form.status.value and pg.request_count == before


def test_create_form_carries_the_run_tags_and_takes_back_its_files(
    pg: Client, service: PostgresService, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text("CLICKHOUSE_ORG_ID=abc\n")
    form = CreateForm(pg, tags={"notebook": "t", "run": "r1"}, env_file=env)
    assert form.tags.as_dict() == {"notebook": "t", "run": "r1"}
    form.name.value, form.region.value = service.name, "eu-west-1"  # a taken name, on purpose
    form.submit.click()
    assert form.service is None
    form.submit.click()  # the second click makes it
    assert form.result is not None, form.errors.text
    made = pg.get_service(form.result.id)
    assert made.tags_dict == {"notebook": "t", "run": "r1"} and made.name == service.name
    assert form.submit.disabled
    assert re.match(r"✓ .+: running after \d+ s", form.status.value)

    creds = Path(form.save_credentials(tmp_path / "mine.env"))
    form.save_to_env()
    assert set(form.credential_files) == {creds.resolve(), env.resolve()}
    assert "PGPASSWORD" in form.credential_files[creds.resolve()]
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert sorted(form.remove_credentials()) == sorted([creds.resolve(), env.resolve()])
    assert not creds.exists() and env.read_text() == "CLICKHOUSE_ORG_ID=abc\n"
    assert form.credential_files == {}

    form.reset_button.click()
    assert not form.submit.disabled and form.name.value == "" and form.service is None
    assert form.tags.as_dict() == {"notebook": "t", "run": "r1"}
    assert form.after.layout.display == "none" and form.status.value == ""
    pg.delete_service(made.id)


# -- colours and the one-line panel --------------------------------------------------------


def test_no_hard_coded_colours_in_the_widgets() -> None:
    sources = [*WIDGETS.glob("*.py"), WIDGETS.parent / "jobs.py", WIDGETS.parent / "messages.py"]
    for path in sources:
        for line in path.read_text().splitlines():
            for found in re.findall(r"color\s*:\s*([^;'\"]+)", line):
                assert found.strip().startswith("var(--jp-") or "{" in found, (path.name, line)


def test_the_error_panel_shows_one_line_and_the_details_on_request() -> None:
    panel = ErrorPanel()
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as exc:
        panel.show(exc)
    head, _, rest = panel.text.partition("<details>")
    assert "ValueError</b>: first line" in head and "second line" not in head
    assert "var(--jp-error-color1" in head and "Traceback" in rest
    panel.note("nothing was sent")
    assert "ValueError" not in panel.text and "var(--jp-warn-color1" in panel.text
    status = StatusLine()
    status.set("not sent", icon="⚠")
    assert "var(--jp-warn-color1" in status.value


# -- the API is down -----------------------------------------------------------------------


def _down() -> Client:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    return mock_client(refuse, base_url="http://127.0.0.1:9")


def test_api_down_shows_one_line_without_a_loop() -> None:
    client = _down()
    picker = ServicePicker(client)
    line = picker.errors.text.partition("<details>")[0]
    assert "TransportError" in line and "127.0.0.1:9" in line
    assert line.count("<br") == 0 and "Traceback" not in line
    form = CreateForm(client)
    assert "TransportError" in form.errors.text and form.existing == {}


def test_api_down_keeps_the_loop_free(figures: dict[str, str]) -> None:
    client = _down()

    async def scenario() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        picker = ServicePicker(client)
        editor = TagEditor(client, str(uuid.uuid4()))
        assert picker.jobs.busy and editor.jobs.busy  # the calls run off the loop
        ticks = 0
        while picker.jobs.busy or editor.jobs.busy:  # the loop keeps turning meanwhile
            ticks += 1
            await asyncio.sleep(0.01)
        await picker.finished()
        await editor.finished()
        assert loop.is_running()
        return ticks, editor.errors.text

    ticks, shown = asyncio.run(scenario())
    assert ticks > 1 and "TransportError" in shown
    figures["widgets, API down: loop turns while the requests failed"] = str(ticks)


def test_an_auto_refresh_clears_its_error_when_a_beat_succeeds() -> None:
    from pgcloud_nb.errors import TransportError
    from pgcloud_nb.jobs import Call, poll_job

    answers: list[object] = [TransportError("unreachable"), [1], [2]]
    applied: list[object] = []

    def fetch() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    panel = ErrorPanel()
    job = poll_job(fetch, applied.append, interval=lambda: 1.0, room=lambda: True, panel=panel)
    step = next(job)
    for _ in range(5):  # drive three beats by hand: Call, pause, Call, pause, Call
        if isinstance(step, Call):
            try:
                value = step.fn()
            except TransportError as exc:
                step = job.throw(exc)
                assert "TransportError" in panel.text  # shown while it holds
                continue
            step = job.send(value)
        else:
            step = job.send(None)
    assert applied == [[1], [2]] and panel.outputs == () and panel.last is None


def test_the_forms_that_check_bodies_begin_loading_the_validator(
    pg: Client, service: PostgresService
) -> None:
    # jsonschema's import takes seconds: a form begins it in a thread as it is built, so
    # that its first check does not hold the kernel (spec.prepare_in_background).
    for build in (lambda: CreateForm(pg), lambda: TagEditor(pg, service.id)):
        prepare_in_background.cache_clear()
        build().close()
        assert prepare_in_background.cache_info().currsize == 1
    loading = prepare_in_background()
    loading.join(timeout=300)
    assert not loading.is_alive() and "jsonschema" in sys.modules
