"""Hooks for every test module.

RESNET_BACKBONES_REQUIRE_DETECTRON2=1 (what .ci/run sets for the detectron2 test modules, after
building detectron2): any skip fails the run instead, a skipped module at collection included, so
that a detectron2 that stopped importing cannot pass CI as "N skipped".
"""
import os

import pytest

REQUIRE_ALL = os.environ.get("RESNET_BACKBONES_REQUIRE_DETECTRON2", "") not in ("", "0")


def _reason(longrepr) -> str:
    # A skip's longrepr is (path, line, "Skipped: reason").
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_instead_of_skip(report) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped, but RESNET_BACKBONES_REQUIRE_DETECTRON2=1 forbids skips "
                       f"(is detectron2 built into this venv?): {_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:  # e.g. pytest.importorskip("detectron2") at module level
        _fail_instead_of_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        _fail_instead_of_skip(report)
