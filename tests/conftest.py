"""Shared fixtures. Model files come from wanpy.testing's per-machine cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (process-global native state stays isolated)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


@pytest.fixture
def python_subprocess():
    return run_python


@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``wanpy._core.Context`` (the only way sd.cpp loads weights) replaced by a spy that records
    and refuses: a refusal that came after a load shows up as a call."""
    from wanpy import _core

    calls: list[dict[str, Any]] = []

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise AssertionError("a weight was about to be loaded")

    monkeypatch.setattr(_core, "Context", spy)
    return calls
