"""Route sd.cpp's and ggml's log lines to ``logging.getLogger("wanpy")``.

sd.cpp's log callback is process-global: _core registers one C++ trampoline that
calls :func:`_sink` with (source, level, text). Level names map one to one onto
logging levels (tested); the source ("sd" or "ggml") is kept on the record.
"""

from __future__ import annotations

import atexit
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

logger = logging.getLogger("wanpy")

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_observers: list[Callable[[str, str, str], None]] = []

# ggml's GGUF reader rejects the 5-D Wan patch embedding that every Wan GGUF has, logs
# an error, and sd.cpp then reads the file with its own reader: not an error for users.
_RECOVERED = (
    re.compile(r"gguf_init_from_file_ptr: tensor '[^']+' has invalid number of dimensions: 5 > 4"),
    re.compile(r"gguf_init_from_file_ptr: failed to read tensor info"),
)


def recovered(text: str) -> bool:
    """An error line sd.cpp recovers from by itself (logged at debug level)."""
    return any(p.search(text) for p in _RECOVERED)


# sd.cpp prefixes its lines with the source location ("stable-diffusion.cpp:3970 - ").
_LOCATION = re.compile(r"^([\w.+-]+:\d+)\s+- (.*)$", re.DOTALL)


def _sink(source: str, level: str, text: str) -> None:
    if not text:
        return
    location = None
    m = _LOCATION.match(text)
    if m:
        location, text = m.groups()
    for observer in list(_observers):
        observer(source, level, text)
    if level == "error" and recovered(text):
        level = "debug"
    logger.log(LEVELS.get(level, logging.INFO), "%s", text, extra={"wanpy_source": source, "sdcpp_location": location})


@contextmanager
def observe(fn: Callable[[str, str, str], None]) -> Iterator[None]:
    """Also pass every native log line to ``fn(source, level, text)``, whatever the log level."""
    _observers.append(fn)
    try:
        yield
    finally:
        _observers.remove(fn)


def install(core: ModuleType) -> None:
    """Point the native trampoline at :func:`_sink` (once, at import)."""
    core.set_log_sink(_sink)
    # Native destructors may log while the interpreter shuts down: stop routing first.
    atexit.register(core.set_log_sink, None)
