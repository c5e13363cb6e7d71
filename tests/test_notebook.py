"""In a notebook (#19, part): examples/quickstart.ipynb executed by a real kernel (nbclient); and the
HTML each result shows there."""

from __future__ import annotations

import base64
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wanpy
from wanpy.display import video_html
from wanpy.progress import GenerationMonitor
from wanpy.testing.scenes import scene_frame

from conftest import REPO

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def _video(frames: int = 9) -> wanpy.Video:
    return wanpy.Video(frames=np.stack([scene_frame(i, 48, 64) for i in range(frames)]), fps=Fraction(16), seed=1)


def test_video_html_embeds_a_playable_webm(tmp_path: Path) -> None:
    page = video_html(_video())
    assert re.search(r"<video [^>]*controls loop muted", page)
    data = re.search(r'src="data:video/webm;base64,([^"]+)"', page)
    assert data is not None
    (tmp_path / "embedded.webm").write_bytes(base64.b64decode(data.group(1)))
    assert wanpy.probe_video(tmp_path / "embedded.webm").frame_count == 9
    assert 'poster="data:image/png;base64,' in page


def test_video_html_over_the_cap_shows_the_first_frame() -> None:
    page = video_html(_video(), max_bytes=100)
    assert "<video" not in page and "<img" in page and "not embedded" in page


def test_results_have_html_tables() -> None:
    report = wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5)
    assert "<table>" in report._repr_html_() and "FITS" in report._repr_html_()
    assert "<table>" in wanpy.system_info()._repr_html_()


def test_a_bar_starts_with_its_pass_not_after_its_first_step() -> None:
    monitor = GenerationMonitor(first_phase="sampling", callback=None, bars=True)
    try:
        monitor.on_progress(0, 4, 0.0)  # sd.cpp announces the pass
        assert monitor._bar is not None and monitor._bar.n == 0 and monitor._bar.total == 4
        monitor.on_progress(1, 4, 0.5)
        assert monitor._bar.n == 1
    finally:
        monitor.close()


def _outputs(cell: Any) -> list[Any]:
    return list(cell.get("outputs", []))


def _result(cell: Any) -> Any:
    """The data of the cell's value (its execute_result)."""
    results = [o for o in _outputs(cell) if o.get("output_type") == "execute_result"]
    assert len(results) == 1, _outputs(cell)
    return results[0]["data"]


@pytest.mark.slow
def test_quickstart_notebook_runs_in_a_real_kernel() -> None:
    import nbformat  # the test extra brings nbclient, nbformat, ipykernel and ipywidgets
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for cell in code:
        streams = [o for o in _outputs(cell) if o.get("output_type") == "stream" and o.get("name") == "stdout"]
        assert streams == [], f"stray stdout in {cell.source!r}: {streams}"
        errors = [o for o in _outputs(cell) if o.get("output_type") == "error"]
        assert errors == [], errors
    info, report, load, video = code[1], code[2], code[3], code[4]
    assert len([o for o in _outputs(load) if WIDGET in o.get("data", {})]) == 1  # the "loading" bar
    assert "<table>" in _result(info)["text/html"]  # (a stderr stream may come first: logs go there)
    assert "FITS" in _result(report)["text/html"]
    shown = _result(video)["text/html"]
    assert "data:video/webm;base64," in shown and "<video" in shown
    bars = [o for o in _outputs(video) if WIDGET in o.get("data", {})]
    assert len(bars) == 2  # one widget bar per phase: sampling, VAE decode
    live = [o for o in _outputs(code[5]) if WIDGET in o.get("data", {})]
    assert len(live) == 1  # the live preview: one widget, updated in place
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    labels = [str(m["state"].get("value")) for m in states.values() if m.get("model_name") == "LabelModel"]
    # the label followed the previews (the last update may land after nbclient saved the state)
    assert any(re.fullmatch(r"sampling: step [12] of 2", label) for label in labels), labels


@pytest.mark.slow
def test_interrupting_the_kernel_leaves_the_pipeline_usable(tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    started = tmp_path / "started"
    small = "width=16, height=16, num_frames=1, cfg_scale=1.0, progress=False"
    notebook = new_notebook(cells=[
        new_code_cell("import wanpy\nfrom wanpy.testing import cached_model_set\n"
                      "kit = cached_model_set(variant='wan2.1-t2v-1.3b', dtype='q4_0', seed=0)\n"
                      "pipe = wanpy.WanPipeline(kit.diffusion_model, kit.vae, progress=False)"),
        new_code_cell(f"pipe.generate_video('a fox', {small}, steps=400, "
                      f"callback=lambda p: open({str(started)!r}, 'w').close())"),
        new_code_cell(f"pipe.generate_video('a fox', {small}, steps=1).num_frames"),
    ])
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True)

    def interrupt_once_generating() -> None:
        deadline = time.monotonic() + 300
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(client.km.provisioner.process.pid, signal.SIGINT)  # what the notebook's stop button sends

    with client.setup_kernel():
        client.execute_cell(notebook.cells[0], 0)
        interrupter = threading.Thread(target=interrupt_once_generating)
        interrupter.start()
        client.execute_cell(notebook.cells[1], 1)
        interrupter.join()
        client.execute_cell(notebook.cells[2], 2)
    errors = [o for o in notebook.cells[1].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "Cancelled" and "Ctrl-C" in errors[0].evalue
    result = [o for o in notebook.cells[2].outputs if o.output_type == "execute_result"]
    assert result and result[0].data["text/plain"] == "1"
    assert nbformat.validate(notebook) is None
