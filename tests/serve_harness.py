"""A real ``wanpy serve`` in a subprocess on 127.0.0.1 with the random-weight 1.3B kit (tests/test_serve*.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from wanpy.testing import cached_model_set

STARTUP_TIMEOUT_S = 120


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    results: Path
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> str:
        """SIGINT (as Ctrl-C; SIGKILL if it has not exited two minutes later), then its whole log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(results: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """``wanpy serve --results-dir results ARGS`` on a free port, once it answers."""
    kit = cached_model_set()
    port = free_port()
    log = results.parent / f"{results.name}-server-{time.monotonic_ns()}.log"
    # the log goes to a file: uvicorn logs every request, and an unread pipe would fill and block the server
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "wanpy", "serve", "--diffusion-model", str(kit.diffusion_model),
             "--vae", str(kit.vae), "--port", str(port), "--threads", "2", "--results-dir", str(results), *args],
            stdout=subprocess.DEVNULL, stderr=sink, env={**os.environ, **(env or {})},
            # a shell's background job (CI under nohup) ignores SIGINT: stop() sends it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    server = Server(f"http://127.0.0.1:{port}", process, results, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}):\n{server.log_tail()}")
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"the server did not answer in {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")
        try:
            httpx.get(f"{server.url}/v1/models", timeout=5)
            return server
        except httpx.TransportError:  # not listening yet
            time.sleep(0.3)
