"""Route sd.cpp's and ggml's log lines to ``logging.getLogger("wanpy")``.

sd.cpp's log callback is process-global: _core registers one C++ trampoline that
calls :func:`_sink` with (source, level, text). Level names map one to one onto
logging levels (tested); the source ("sd" or "ggml") is kept on the record.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("wanpy")

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_observers: list[Callable[[str, str, str], None]] = []


def _sink(source: str, level: str, text: str) -> None:
    if not text:
        return
    for observer in list(_observers):
        observer(source, level, text)
    logger.log(LEVELS.get(level, logging.INFO), "%s", text, extra={"wanpy_source": source})


@contextmanager
def observe(fn: Callable[[str, str, str], None]) -> Iterator[None]:
    """Also pass every native log line to ``fn(source, level, text)``, whatever the log level."""
    _observers.append(fn)
    try:
        yield
    finally:
        _observers.remove(fn)


def install(core: object) -> None:
    """Point the native trampoline at :func:`_sink` (once, at import)."""
    core._log_sink = _sink  # type: ignore[attr-defined]
    core.set_log_enabled(True)  # type: ignore[attr-defined]
    # Native destructors may log while the interpreter shuts down: stop routing first.
    atexit.register(core.set_log_enabled, False)  # type: ignore[attr-defined]
