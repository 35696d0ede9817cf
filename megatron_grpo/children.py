"""The processes this project starts die with the process that started them, SIGKILL included: an engine,
or Megatron's checkpoint-writer manager, left behind holds a GPU or memory on a node the next job needs.
Standard library only, so a child imports it without torch."""

from __future__ import annotations

import ctypes
import multiprocessing.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


class _Lifeline:
    """The key of the after-fork hook below (multiprocessing keeps hooks in a weak dictionary)."""


_LIFELINE = _Lifeline()


def die_with_parent() -> None:
    """Ask Linux for SIGKILL when the parent exits. Called first thing in the child (a ``preexec_fn`` or a
    process initializer). The parent is the thread that started the child, so start children from the main
    thread. Elsewhere than Linux there is no such request; nothing is done."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def forked_children_die_with_parent() -> None:
    """From now on, every process ``multiprocessing`` forks from this one (and, the hook being inherited, from
    those) calls ``die_with_parent`` first. Megatron's checkpoint writer forks its write workers and its
    async writer: a worker whose parent was killed could block forever on a full results pipe, keeping
    every pipe it inherited open (the reward pool's forkserver then never sees its parent go)."""
    multiprocessing.util.register_after_fork(_LIFELINE, lambda _: die_with_parent())
