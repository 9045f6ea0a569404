"""Under CI (``CI`` set to anything but empty/0/false), a test or a test module skipped because a module could not
be imported (``pytest.importorskip``: napari, Qt, imageio…) fails the run instead: a broken napari install would
otherwise turn the GUI tests into skips and leave CI green (issue 22). Imported by conftest.py."""

import os

import pytest


def strict_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _import_skip_reason(rep) -> str | None:
    if not rep.skipped:
        return None
    lr = rep.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason if "could not import" in reason else None


def _fail_under_ci(rep) -> None:
    reason = _import_skip_reason(rep) if strict_ci() else None
    if reason is not None:
        rep.outcome = "failed"
        rep.longrepr = (f"CI is set: a test skipped because a module could not be imported fails the run "
                        f"(install it, or unset CI to skip): {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_under_ci(outcome.get_result())
