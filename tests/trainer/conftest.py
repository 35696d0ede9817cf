"""The trainer tests' lane (harness.Lane): the ``LANE`` runs that the selected tests name in
``@pytest.mark.lane(...)`` start as soon as the session is collected, so they run beside the rest of the
suite, which leaves a core idle most of the time (two-process cases, Slurm jobs waiting on the scheduler).
A test waits only for its own runs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.trainer.harness import Lane

_LANE: list[Lane] = []


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config, items) -> None:
    runs = {}
    for item in items:
        for mark in item.iter_markers("lane"):
            runs.update({name: item.module.LANE[name] for name in mark.args})
    if not runs or config.option.collectonly:
        return
    root = Path(tempfile.mkdtemp(prefix="megatron-grpo-lane-"))
    lane = Lane(root, workers=2)
    lane.submit(runs)
    _LANE.append(lane)

    def close() -> None:
        lane.close()
        shutil.rmtree(root, ignore_errors=True)

    config.add_cleanup(close)


@pytest.fixture(scope="session")
def lane() -> Lane:
    return _LANE[0]
