"""The reliability suite's harness: bad input runs in a fresh interpreter, which must survive.

A *case* is a few lines of Python (``Case.code``) run after a family's ``setup`` in a
child process. The child reports, per case, the exception it raised (class, message),
whether a file exists at its output path ``OUT`` (or a hidden temporary file next to it),
the wanpy log lines that show native work started, and whether ``Case.then`` (the
pipeline staying usable afterwards) ran cleanly. ``check`` then asserts, per case: the
process exited normally (status 0, no signal, no hang), the exception is the expected
class with a message matching ``Case.message``, no output was left, and ``then`` passed.

Cases that reach native code get one process each. Pure-validation cases of one family
may share a process (``run_family``): every case must still be refused before native
generation starts (``Case.forbid``), and a crash is pinned on the case that was running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Log lines that show sd.cpp started loading weights or generating.
LOADING = r"loading tensors from "
GENERATING = r"^generate_video \d+x\d+x\d+"

DRIVER = r'''
import faulthandler, glob, json, logging, os, re, sys, threading, traceback
faulthandler.enable()
SPEC = json.loads(sys.stdin.read())
MODELS, TMP = SPEC["models"], SPEC["tmp"]
SMALL = dict(width=16, height=16, num_frames=1, steps=1, cfg_scale=1.0, progress=False, seed=1)
ns = {"__name__": "__case__", "MODELS": MODELS, "TMP": TMP, "SMALL": SMALL}
markers = []

class _Markers(logging.Handler):
    def emit(self, record):
        text = record.getMessage()
        if any(re.search(p, text) for p in SPEC["markers"]):
            markers.append(text[:200])

_log = logging.getLogger("wanpy")
_log.addHandler(_Markers())
_log.setLevel(logging.DEBUG)

def _report(tag, payload):
    sys.stdout.write(tag + " " + json.dumps(payload) + "\n")
    sys.stdout.flush()

def _hung(case_id, seconds):
    _report("WANPY-HUNG", {"id": case_id, "seconds": seconds})
    faulthandler.dump_traceback(all_threads=True)
    os._exit(3)

exec(SPEC["setup"], ns)
for case in SPEC["cases"]:
    _report("WANPY-START", {"id": case["id"]})
    ns["OUT"] = out = case["output"]
    del markers[:]
    watchdog = threading.Timer(case["timeout"], _hung, (case["id"], case["timeout"]))
    watchdog.daemon = True
    watchdog.start()
    result = {"id": case["id"], "error": None, "message": None, "traceback": None, "then_error": None}
    try:
        exec(case["code"], ns)
    except BaseException as exc:
        result.update(error=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()[-4000:])
    result["markers"] = list(markers)
    if case["then"]:
        try:
            exec(case["then"], ns)
        except BaseException:
            result["then_error"] = traceback.format_exc()[-4000:]
    watchdog.cancel()
    if out is not None:
        result["output_exists"] = os.path.exists(out)
        result["leftovers"] = sorted(os.path.basename(p) for p in glob.glob(
            os.path.join(glob.escape(os.path.dirname(out)), "." + glob.escape(os.path.basename(out)) + ".*")))
    _report("WANPY-RESULT", result)
'''


@dataclass(frozen=True)
class Case:
    """One bad input and what must come of it.

    ``error`` is the exception's class name (None: the case must succeed); ``message``
    a regex its message must match (tell the user what is wrong and what to do).
    ``then`` runs after the case and must succeed (the process stays usable).
    ``forbid`` is a regex no wanpy log line may match while the case runs (e.g. native
    generation started: the input must be refused before). ``output`` is ``OUT``'s path
    in the case's own folder (an absolute path is used as it is; "" for none);
    ``output_expected``: the case succeeds and writes ``OUT``. ``xfail``: a known gap,
    with the fix it needs.
    """

    id: str
    code: str
    error: str | None
    message: str = ""
    then: str = ""
    forbid: str | None = None
    output: str = "out.webm"
    output_expected: bool = False
    timeout: float = 240
    xfail: str | None = None
    skip: str | None = None

    def param(self) -> Any:
        marks = []
        if self.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail))
        if self.skip:
            marks.append(pytest.mark.skip(reason=self.skip))
        return pytest.param(self, id=self.id, marks=marks)


@dataclass
class Outcome:
    """What one child process did."""

    returncode: int
    stdout: str
    stderr: str
    started: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    hung: dict[str, Any] | None = None


def models_of(model_set: Any) -> dict[str, str | None]:
    return {k: None if v is None else str(v) for k, v in vars(model_set).items()
            if k in ("diffusion_model", "high_noise_diffusion_model", "vae", "text_encoder", "clip_vision")}


def run(cases: list[Case], *, setup: str, models: dict[str, str | None], tmp: Path,
        timeout: float | None = None) -> Outcome:
    """Run ``cases`` one after the other in one fresh interpreter."""
    spec = {
        "setup": setup, "models": models, "tmp": str(tmp), "markers": [LOADING, GENERATING],
        "cases": [{"id": c.id, "code": c.code, "then": c.then, "timeout": c.timeout,
                   "output": None if not c.output else str(tmp / f"case{i}" / c.output)} for i, c in enumerate(cases)],
    }
    for i in range(len(cases)):
        (tmp / f"case{i}").mkdir(exist_ok=True)  # deeper folders in ``output`` are the case's to make
    total = timeout if timeout is not None else 120 + sum(c.timeout for c in cases)
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(spec), capture_output=True, text=True,
                          timeout=total, env=dict(os.environ, PYTHONUNBUFFERED="1", GGML_NO_BACKTRACE="1"))
    out = Outcome(proc.returncode, proc.stdout, proc.stderr)
    for line in proc.stdout.splitlines():
        tag, _, payload = line.partition(" ")
        if tag == "WANPY-START":
            out.started.append(json.loads(payload)["id"])
        elif tag == "WANPY-RESULT":
            result = json.loads(payload)
            out.results[result["id"]] = result
        elif tag == "WANPY-HUNG":
            out.hung = json.loads(payload)
    return out


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def check(case: Case, outcome: Outcome) -> None:
    """Assert everything the issue asks of one case (see the module docstring)."""
    result = outcome.results.get(case.id)
    if outcome.hung is not None and outcome.hung["id"] == case.id:
        pytest.fail(f"{case.id}: hung for {outcome.hung['seconds']} s (deadlock?); threads:\n"
                    f"{outcome.stderr[-3000:]}")
    if result is None:
        where = outcome.started[-1] if outcome.started else "setup"
        pytest.fail(f"{case.id}: no result; the process ended ({_exit_text(outcome.returncode)}) while running "
                    f"{where!r}:\n{outcome.stderr[-3000:]}")
    if case.error is None:
        assert result["error"] is None, f"{case.id} raised:\n{result['traceback']}"
    else:
        assert result["error"] == case.error, (
            f"{case.id}: expected {case.error}, got {result['error']}: {result['message']}\n"
            f"{result['traceback'] or ''}")
        assert re.search(case.message, result["message"] or ""), (
            f"{case.id}: message {result['message']!r} does not match {case.message!r}")
    if case.forbid:
        reached = [m for m in result["markers"] if re.search(case.forbid, m)]
        assert not reached, f"{case.id}: native work started before the refusal: {reached[:3]}"
    if case.output:
        if case.output_expected:
            assert result["output_exists"], f"{case.id}: no output file was written"
        else:
            assert not result["output_exists"], f"{case.id}: an output file was left behind"
        assert not result["leftovers"], f"{case.id}: temporary files were left behind: {result['leftovers']}"
    assert result["then_error"] is None, f"{case.id}: the process was not usable afterwards:\n{result['then_error']}"
    assert outcome.returncode == 0, (
        f"{case.id}: the process did not exit normally ({_exit_text(outcome.returncode)}):\n{outcome.stderr[-3000:]}")
