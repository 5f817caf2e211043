"""Foreign clients' tests: each test's outcome, kept where its fixtures can read it.

pytest's own recipe ("making test result information available in fixtures"):
the report of each phase is set on the item as ``rep_setup``, ``rep_call`` and
``rep_teardown``, so a fixture's teardown can tell whether the test body passed.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
