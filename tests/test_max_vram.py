"""max_vram: sd.cpp's graph-cut segments with the weights streamed from RAM. Refused where sd.cpp would
ignore it or cannot hold it, planned by the pre-flight with sd.cpp's own planner (the segments, the largest
segment, the device peak), refused below the largest segment, chosen by fit="auto" as its last step, and on
a real Vulkan driver (lavapipe) a run under a budget passes with exactly the planned segments, while one
below the largest segment fails cleanly with the process alive (patch 0008)."""

from __future__ import annotations

import json
import re

import pytest

import wanpy
from conftest import run_python
from wanpy.memory import refusal
from wanpy.testing import cached_model_set

MiB = 2**20
GPU = dict(max_allocation="4GiB", offload_to_cpu=True, flash_attention=True)  # a modelled Vulkan device
SIZE = dict(width=64, height=64, num_frames=9)


@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_vram": "6GiB"}, "max_vram='6GiB' needs offload_to_cpu=True"),
    ({"max_vram": "6GiB", "offload_to_cpu": True}, "on the CPU sd.cpp ignores it"),
    ({"max_vram": "lots", "offload_to_cpu": True}, "max_vram: not a size"),
])
def test_a_budget_sdcpp_would_ignore_or_cannot_hold_is_refused_before_loading(t2v, load_spy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, **kwargs)
    assert load_spy == []


def test_a_budget_sdcpp_cannot_hold_exactly_is_refused(t2v):
    with pytest.raises(ValueError, match=r"cannot hold 1,000,000,001 bytes exactly; give a whole number of MiB"):
        wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, max_vram=1_000_000_001, **GPU, **SIZE)


def _plan(report: wanpy.Preflight, kind: str) -> int:
    return next(a.nbytes for a in report.allocations if a.phase == "sampling" and a.kind == kind)


def test_the_preflight_plans_segments_and_refuses_a_budget_below_the_largest(t2v):
    whole = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, **GPU, **SIZE)
    roomy = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, max_vram="512MiB", **GPU, **SIZE)
    tight = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, max_vram="32MiB", **GPU, **SIZE)
    assert whole.fits and roomy.fits
    # streamed per segment: the sampling phase holds one segment's weights, not all 30 blocks'
    whole_peak, roomy_peak = (next(p.device for p in r.phases if p.phase == "sampling") for r in (whole, roomy))
    assert roomy_peak < whole_peak
    assert _plan(roomy, "segment weights") < next(a.buffer_total for a in whole.allocations
                                                  if a.kind == "weights buffer" and a.component == "diffusion_model")
    assert not tight.fits
    needed = tight.max_vram_floor
    assert needed is not None and f"({needed:,} B, sd.cpp's own measure" in " ".join(tight.problems)
    error = refusal(tight)  # what a pipeline raises: the segment's need against the budget
    assert (error.required, error.limit) == (needed, 32 * MiB)
    assert 32 * MiB < needed < 512 * MiB
    # the smallest budget the pre-flight names fits, one MiB less does not
    at = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, max_vram=-(-needed // MiB) * MiB, **GPU, **SIZE)
    below = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, max_vram=(needed // MiB) * MiB, **GPU, **SIZE)
    assert at.fits and not below.fits


def test_fit_auto_chooses_the_largest_budget_whose_peak_fits(t2v):
    whole = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, vae_tiling=True, **GPU, **SIZE)
    peak_without_budget = max(p.device for p in whole.phases)
    vae_peak = next(p.device for p in whole.phases if p.phase == "VAE decode")
    memory = (vae_peak + peak_without_budget) // 2  # the VAE fits, the whole DiT does not
    assert vae_peak < memory < peak_without_budget
    choice = wanpy.choose_fit(t2v.diffusion_model, vae=t2v.vae, total_memory=memory, vae_tiling=True, **GPU, **SIZE)
    budget = choice.settings["max_vram"]
    assert budget is not None and budget % MiB == 0 and choice.report.fits
    assert choice.changed["max_vram"] == (None, budget)
    # the largest whole-MiB budget up to the device's memory: that, or one MiB more would not fit
    assert budget <= memory
    if budget < memory // MiB * MiB:
        assert not wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, total_memory=memory, vae_tiling=True,
                                   max_vram=budget + MiB, **GPU, **SIZE).fits
    assert "segment weights" in {a.kind for a in choice.report.allocations}
    assert "keep_vae_on_cpu" not in choice.changed  # the VAE fits on the device: only what is needed changes


# --- on a real Vulkan driver --------------------------------------------------------------------------
CASE = """
import json, wanpy
from wanpy import _logging
from wanpy.testing import cached_model_set
m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
budget = {budget}
settings = dict(flash_attention=True, offload_to_cpu=True, keep_vae_on_cpu=True)
request = dict(width=32, height=32, num_frames=1)
report = wanpy.preflight(m.diffusion_model, vae=m.vae, max_vram=budget, suggest=False, **settings, **request)
out = {{"fits": report.fits, "problems": list(report.problems), "floor": report.max_vram_floor,
       "planned": [[a.kind, a.nbytes] for a in report.allocations if a.phase == "sampling"],
       "peak": next(p.device for p in report.phases if p.phase == "sampling")}}
lines = []
with wanpy.WanPipeline(m.diffusion_model, m.vae, n_threads=2, max_vram=budget, **settings) as pipe:
    run = dict(steps=1, cfg_scale=1.0, seed=5, progress=False, **request)
    with _logging.observe(lambda source, level, text: lines.append(text)):
        try:
            out["strict"] = list(pipe.generate_video("fox", **run).frames.shape)
        except wanpy.AllocationTooLargeError as exc:
            out["strict"] = ["refused", str(exc)[:300]]
        try:
            out["unchecked"] = list(pipe.generate_video("fox", preflight=False, **run).frames.shape)
        except wanpy.GenerationError as exc:
            out["unchecked"] = ["GenerationError", str(exc)[:300]]
out["log"] = [l for l in lines if "graph cut" in l or "partial params" in l or "compute buffer size" in l
              or "cache backend buffer" in l]
print("RESULT " + json.dumps(out))
"""


def run_case(budget: int) -> dict:
    result = run_python(CASE.format(budget=budget), env={"GGML_VK_VISIBLE_DEVICES": "0"}, timeout=2400)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _logged_mib(lines: list[str], pattern: str) -> list[float]:
    return [float(m.group(1)) for line in lines for m in [re.search(pattern, line)] if m]


@pytest.mark.vulkan
@pytest.mark.slow
def test_lavapipe_runs_the_planned_segments_and_fails_cleanly_below_the_largest():
    fine = run_case(16 * MiB)  # below one block's need (its weights alone are ~43 MiB at q4_0): refused
    assert not fine["fits"] and fine["strict"][0] == "refused"
    assert fine["unchecked"][0] == "GenerationError"  # patch 0008: sd.cpp refuses; the process lives on
    assert any("refusing to exceed the budget" in line for line in fine["log"])
    needed = fine["floor"]
    ok = run_case(-(-needed // MiB) * MiB)
    assert ok["fits"] and ok["strict"] == ok["unchecked"] == [1, 32, 32, 3]
    planned = dict(ok["planned"])
    # sd.cpp's per-segment lines: the largest streamed weights and compute buffer are the predicted ones
    params = _logged_mib(ok["log"], r"offload partial params \(\s*([\d.]+) MB")
    assert params and abs(max(params) * MiB - planned["segment weights"]) <= 0.006 * MiB
    compute = _logged_mib([l for l in ok["log"] if "Wan2.1" in l], r"compute buffer size: ([\d.]+) MB")
    assert abs(max(compute) * MiB - planned["segment compute buffer"]) <= 0.006 * MiB


def test_a_budget_below_the_text_encoders_segment_is_refused_when_the_pipeline_is_made(tmp_path, monkeypatch,
                                                                                        load_spy):
    # sd.cpp aborts the process when the text encoder's compute fails, so its floor (the token embedding's
    # segment) is checked before loading even with preflight=False; a GPU is modelled (this build has none)
    from wanpy import pipeline
    from wanpy.system import Device
    from wanpy.testing import make_model_set

    gpu = Device(0, "Vulkan0", "a modelled GPU", "gpu", "Vulkan", 64 * 2**30, 64 * 2**30, max_allocation=4 * 2**30,
                 buffer_max_size=2**30)
    from wanpy.memory import target

    monkeypatch.setattr(pipeline, "resolve_device", lambda device, devs: gpu)
    monkeypatch.setattr(target, "resolve_device", lambda device: gpu)
    kit = make_model_set(tmp_path, variant="wan2.1-t2v-1.3b", dtype="q8_0", text_encoder=True, sparse=True)
    report = wanpy.preflight(kit.diffusion_model, vae=kit.vae, text_encoder=kit.text_encoder, max_vram="256MiB",
                             **GPU, **SIZE)
    floor = report.max_vram_floor
    assert report.params["max_vram_floor_component"] == "text_encoder" and floor > 256 * MiB
    with pytest.raises(ValueError, match=rf"below what the text_encoder's largest graph segment needs: .*"
                                         rf"\({floor:,} B\); sd.cpp would abort"):
        wanpy.WanPipeline(**kit.pipeline_kwargs(), offload_to_cpu=True, flash_attention=True, preflight=False,
                          max_vram="256MiB")
    assert load_spy == []
