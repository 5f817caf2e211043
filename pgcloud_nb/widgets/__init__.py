"""Forms that drive the API: create, pick, tag, configure, delete, and the fleet table.

>>> from pgcloud_nb.widgets import CreateForm, ServicePicker, ConfigEditor
>>> form = CreateForm(pg); form                       # fill it in, click "Create service"
>>> picker = ServicePicker(pg); ConfigEditor(pg, picker)

Every widget works in JupyterLab 4 and without a kernel: set ``.value`` on its
fields and call ``.click()`` on its buttons, then look at the API. Errors in
callbacks appear in the widget's ``errors`` panel in one line (type, status and
the API's message; the requestId under "details"), never only in the kernel log,
in JupyterLab's theme colours. Each action starts by clearing what the last one
reported. Every request (loads, refreshes, writes, and the waits after create,
restart and delete) runs as a job: an asyncio task on the kernel's loop with the
blocking call in a thread, so the kernel stays free even when the API is down;
without a loop it runs to completion inside ``.click()``. In a notebook cell,
``await widget.finished()`` before reading what a job fetched. No widget ever
shows a password or connection string.
"""

from ..jobs import ErrorPanel
from .config import ConfigEditor
from .create import REGION_SUGGESTIONS, CreateForm
from .fleet import FleetTable
from .inputs import write_connection_details
from .service import DeleteButton, ServicePicker, TagEditor

__all__ = [
    "REGION_SUGGESTIONS",
    "ConfigEditor",
    "CreateForm",
    "DeleteButton",
    "ErrorPanel",
    "FleetTable",
    "ServicePicker",
    "TagEditor",
    "write_connection_details",
]
