"""bench/bench_generation.py --smoke: the generation benchmark's harness still runs.

Benchmarks are not tests: nothing here checks a speed. The harness runs at its smallest
(32x32, 1 frame, 1 step) against sd.cpp's own CLI when bench/build_sdcpp_tools.sh has built
it, and wanpy alone otherwise (the bench says so on stderr).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SD_CLI = REPO / "build" / "bench-tools" / "bin" / "sd-cli"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_generation.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_smoke_run_reports_every_section(smoke):
    result, table = smoke
    assert result["smoke"] is True
    assert result["request"]["width"] == 32 and result["request"]["frames"] == 1
    wanpy = result["overhead"]["wanpy"]
    assert wanpy["wall_s"] > 0 and wanpy["peak_rss_bytes"] > 0 and wanpy["sampling_s"] > 0
    assert result["many"]["wanpy_clip_wall_s"] and len(result["many"]["wanpy_clip_wall_s"]) == 2
    assert {t["engine"] for t in result["threads"]} >= {"wanpy"}
    assert "### Overhead" in table and "### Threads" in table
    if SD_CLI.exists():
        assert result["overhead"]["ratio"]["wall"] > 0
        assert "ratio_wall" in result["many"]
        assert len(result["identity"]["pairs"]) == 3  # the overhead pair and the two clips


def test_smoke_frames_identical_to_sd_cli(smoke):
    if not SD_CLI.exists():
        pytest.skip(f"{SD_CLI.relative_to(REPO)} not built (bench/build_sdcpp_tools.sh): nothing to compare with")
    result, _ = smoke
    assert result["identity"]["all_identical"], result["identity"]["pairs"]
