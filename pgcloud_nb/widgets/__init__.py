"""Forms that drive the API: create, pick, tag, configure, delete, and the fleet table.

>>> from pgcloud_nb.widgets import CreateForm, ServicePicker, ConfigEditor
>>> form = CreateForm(pg); form                       # fill it in, click "Create service"
>>> picker = ServicePicker(pg); ConfigEditor(pg, picker)

Every widget works in JupyterLab 4 and without a kernel: set ``.value`` on its
fields and call ``.click()`` on its buttons, then look at the API. Errors in
callbacks appear in the widget's ``errors`` panel (status, API message and
requestId), never only in the kernel log. Waits after a click (create, restart,
delete) run as asyncio tasks on the kernel's loop, so the kernel stays free;
without a loop they run to completion inside ``.click()``. No widget ever shows
a password or connection string.
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
