"""``wanpy serve``: a local video service over one loaded model set (``pip install "wanpy[serve]"``).

``create_app(pipeline_or_files, ...)`` is the FastAPI application, to run with uvicorn or mount in an
existing ASGI app; ``run(...)`` is what the ``wanpy serve`` command runs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

from wanpy.serve.app import create_app

__all__ = ["check_bind", "create_app", "run"]

LOOPBACK_NAMES = ("localhost",)


def check_bind(host: str, api_key: str | None) -> None:
    """Binding anything but the loopback interface needs an API key."""
    if api_key is not None:
        if len(api_key) < 16:
            raise ValueError("the API key must be at least 16 characters")
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_NAMES
    if not loopback:
        raise ValueError(f"binding {host} (not the loopback interface) needs an API key: pass --api-key or set "
                         "WANPY_API_KEY")


class _JsonLines(logging.Formatter):
    """One JSON object a log record: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def run(models: dict[str, Any], *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
        log_level: int = logging.INFO, **options: Any) -> None:
    """Load the models, then serve until SIGINT/SIGTERM (the running generation is cancelled at its next
    step, and the results folder's files are the only ones written)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("wanpy serve needs uvicorn: pip install \"wanpy[serve]\"") from exc

    check_bind(host, api_key)
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=log_level, handlers=[handler], force=True)
    app = create_app(models, api_key=api_key, **options)
    store = app.state.store

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            store.stop()  # the running generation stops at its next step; open event streams end
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level, access_log=True,
                            timeout_graceful_shutdown=10)
    Server(config).run()
