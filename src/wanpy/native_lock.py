"""The one lock around sd.cpp: its callbacks, static buffers and ``rand()`` are process-global,
so one native load or generation runs at a time per process; other threads wait."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from wanpy.errors import GenerationError

__all__ = ["native"]

_lock = threading.Lock()
_owner: int | None = None  # the thread inside sd.cpp, while one is


def _reset_after_fork() -> None:
    # a child forked while another thread held the lock would wait for it forever
    global _lock, _owner
    _lock = threading.Lock()
    _owner = None


os.register_at_fork(after_in_child=_reset_after_fork)


@contextmanager
def native() -> Iterator[None]:
    """The native lock, refusing the thread that already holds it: a progress callback or log
    handler calling wanpy again would otherwise wait for itself forever."""
    global _owner
    if _owner == threading.get_ident():
        raise GenerationError("wanpy cannot be called from its own progress callback or log handler while it "
                              "generates or loads in this thread: return from the callback first")
    with _lock:
        _owner = threading.get_ident()
        try:
            yield
        finally:
            _owner = None
