"""StopRequest: a signal or the stop file (slurm/train.sbatch's pre-emption warning) asks for a stop."""

from __future__ import annotations

import os
import signal

import pytest

from megatron_grpo.trainer.signals import STOP_FILE_ENV, StopRequest


@pytest.fixture(autouse=True)
def _restore_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_stop_file_appearing_is_a_stop_request(tmp_path, monkeypatch):
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stop"))
    stop = StopRequest()
    assert not stop.agreed() and stop.reason is None
    (tmp_path / "stop").touch()
    assert stop.agreed() and stop.reason == f"stop file {tmp_path / 'stop'}"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_is_a_stop_request(monkeypatch, sig):
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    stop = StopRequest()
    assert stop.stop_file is None and not stop.agreed()
    os.kill(os.getpid(), sig)
    assert stop.agreed() and stop.reason == sig.name
