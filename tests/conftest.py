"""Hooks for every test module.

RESNET_BACKBONES_REQUIRE_DETECTRON2=1 (what .ci/run sets for the detectron2 test modules, after
building detectron2): any skip fails the run instead, a skipped module at collection included, so
that a detectron2 that stopped importing cannot pass CI as "N skipped".

Under pytest-xdist (the README's test command runs ``-n 2``) each worker gets its share of the cores
as intra-op threads, and so do the tools it starts (OMP_NUM_THREADS is inherited): on this project's
2-core CPUs two single-threaded processes do more work than one with two threads (the quick schedules'
small maps barely use a second thread; README "Performance"), and four threads on two cores would slow
both workers down.
"""
import os

import pytest

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)  # for the tools the tests start (train_net, benchmark)
    import torch

    torch.set_num_threads(_THREADS)

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


def pytest_collection_modifyitems(session, config, items):
    """Under pytest-xdist, each worker starts with one of the minutes-long trainings (``slow``).

    ``--dist worksteal`` first gives worker k the k-th contiguous share of the collection (the shares
    as equal as they divide); the trainings go to the fronts of the shares, round-robin, and the short
    tests fill in around them. In collection order both trainings came last and ran on whichever
    workers were free: one of them alone on one core for minutes while the other worker idled."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    if _WORKERS < 2 or not slow:
        return
    rest = [item for item in items if not item.get_closest_marker("slow")]
    ordered, left = [], len(items)
    for k in range(_WORKERS):
        share = left // (_WORKERS - k)  # what worksteal sends worker k first
        mine = slow[k::_WORKERS]
        take = max(0, share - len(mine))
        ordered += mine + rest[:take]
        rest = rest[take:]
        left -= share
    items[:] = ordered + rest
