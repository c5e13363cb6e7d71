"""``wanpy.distributed``: batches on a real local Ray cluster started by these tests (2 CPUs, two
CPU workers of one CPU each), with the random-weight 1.3B kit; ``wanpy batch`` through a subprocess.
The checks of ``generate_batch``'s arguments run without Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

import wanpy
from wanpy import distributed
from wanpy.testing import cached_model_set

SMALL = dict(width=32, height=32, num_frames=5, steps=2, cfg_scale=1.0)
REQUESTS = [dict(prompt=f"a fox, take {seed}", seed=seed, **SMALL) for seed in (11, 12, 13, 14)]
UNFITTABLE = dict(prompt="too big", width=512, height=512, num_frames=657, steps=2, seed=1)  # 1.3 TB on the CPU
CPU_WORKER = {"CPU": 1}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    m = cached_model_set()
    return {"diffusion_model": str(m.diffusion_model), "vae": str(m.vae)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs for this module; its address for `wanpy batch --ray-address`."""
    context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
                       logging_level="WARNING")
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(models: dict[str, Any]) -> list[np.ndarray]:
    """REQUESTS' frames from one WanPipeline in this process, one thread, as the workers run."""
    with wanpy.WanPipeline(**models, n_threads=1, progress=False) as pipe:
        return [_frames(pipe, r) for r in REQUESTS]


def _frames(pipe: wanpy.WanPipeline, request: dict[str, Any]) -> np.ndarray:
    """One request (a prompt and options, as ``generate_batch`` takes it) generated in this process."""
    return pipe.generate_video(request["prompt"], progress=False,
                               **{k: v for k, v in request.items() if k != "prompt"}).frames


# --- arguments, checked before anything is scheduled ------------------------------------
@pytest.fixture
def never_scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    def spy(*args: Any) -> Any:
        raise AssertionError("the batch was scheduled")

    monkeypatch.setattr(distributed, "_run", spy)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(requests=[REQUESTS[0], dict(REQUESTS[1], width=33)]), ValueError, "request 1: width"),
    (dict(requests=[dict(seed=1)]), ValueError, "request 0: no 'prompt'"),
    (dict(requests=[dict(REQUESTS[0], sample_params={"video_frames": 161})]), TypeError,
     "request 0: build_request() got an unexpected keyword argument 'sample_params'"),
    (dict(requests=[dict(REQUESTS[0], n_threads=4)]), TypeError, "request 0: build_request() got 'n_threads', a "
                                                                  "setting fixed when the weights load"),
    (dict(requests=[dict(REQUESTS[0], preview="proj")]), ValueError, "request 0: preview: a batch delivers no"),
    (dict(requests=["a fox"]), TypeError, "request 0: expected a GenerationRequest or a mapping"),
    (dict(requests=[]), ValueError, "requests is empty"),
    (dict(models={"diffusion_model": "x.gguf"}), ValueError, "models needs 'vae'"),
    (dict(models={"unet": "x.gguf"}), TypeError, "models: unknown key 'unet'"),
    (dict(resources_per_worker={"gpu": 1}), ValueError, "Ray's resource is 'GPU', not 'gpu'"),
    (dict(resources_per_worker={"GPU": 0}), ValueError, "resources_per_worker['GPU'] must be a positive number"),
    (dict(num_workers=0), ValueError, "num_workers must be >= 1"),
    (dict(output_dir="/nonexistent/clips"), FileNotFoundError, "output_dir: the output directory does not exist"),
])
def test_bad_arguments_are_refused_before_anything_is_scheduled(never_scheduled, models, kwargs, error, message):
    args: dict[str, Any] = {"requests": REQUESTS[:1], "models": models, "resources_per_worker": CPU_WORKER, **kwargs}
    with pytest.raises(error) as info:
        distributed.generate_batch(args.pop("requests"), **args)
    assert message in str(info.value)


def test_a_request_for_another_family_is_refused(never_scheduled, models):
    request = wanpy.build_request("wan2.2-ti2v-5b", "a fox", width=64, height=64, num_frames=5)
    with pytest.raises(ValueError, match="request 0: the request is for wan2.2-ti2v-5b; the models are "
                                         "wan2.1-t2v-1.3b"):
        distributed.generate_batch([request], models=models, resources_per_worker=CPU_WORKER)


def test_batch_cli_names_the_bad_line_and_starts_nothing(tmp_path, models):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(REQUESTS[0]) + "\n" + json.dumps({"prompt": "x", "sample_params": {}}) + "\n")
    result = _cli("batch", str(requests), "--diffusion-model", models["diffusion_model"], "--vae", models["vae"],
                  "--output-dir", str(tmp_path), "--cpus-per-worker", "1")
    assert result.returncode == 2, result.stderr
    assert "request 1: build_request() got an unexpected keyword argument 'sample_params'" in result.stderr
    assert "Ray" not in result.stderr  # refused before a cluster was started
    requests.write_text(json.dumps(REQUESTS[0]) + "\n[1, 2]\n")
    result = _cli("batch", str(requests), "--diffusion-model", models["diffusion_model"], "--vae", models["vae"],
                  "--output-dir", str(tmp_path), "--cpus-per-worker", "1")
    assert result.returncode == 2 and "requests.jsonl line 2: expected a JSON object" in result.stderr


# --- routing across unlike workers: the scheduler with stand-in workers -----------------------
class _Ref:
    def __init__(self, value: Any) -> None:
        self.value = value


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self.fn(*args))


class _Device:
    """A worker whose pre-flight fits requests up to ``widest`` pixels wide, as a 4 GiB-per-allocation
    Vulkan box next to a larger GPU would."""

    def __init__(self, widest: int) -> None:
        self.widest, self.ran = widest, []
        self.generate = _Method(self._generate)

    def _generate(self, index: int, request: wanpy.GenerationRequest, target: str | None) -> dict[str, Any]:
        if request.width > self.widest:
            return {"status": "refused", "error": f"pre-flight: {request.width} wide does not fit"}
        self.ran.append(index)
        return {"status": "done", "seed": request.seed, "seconds": 1.0}


class _Ray:
    exceptions = ray.exceptions

    @staticmethod
    def wait(refs: list[_Ref], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref: _Ref) -> Any:
        return ref.value


def test_big_requests_go_to_the_workers_they_fit_and_one_that_fits_none_fails_alone():
    small = wanpy.build_request("wan2.1-t2v-1.3b", "a fox", **SMALL, seed=1)
    big = wanpy.build_request("wan2.1-t2v-1.3b", "a fox", width=64, height=32, num_frames=5, seed=2)
    huge = wanpy.build_request("wan2.1-t2v-1.3b", "a fox", width=128, height=32, num_frames=5, seed=3)
    requests = [big, small, huge, big, small, big]
    vulkan, cuda = _Device(widest=32), _Device(widest=64)
    workers = [distributed._Worker("vulkan", vulkan, {"device": "Vulkan0"}),
               distributed._Worker("cuda", cuda, {"device": "CUDA0"})]
    items = [distributed._Item(i, r) for i, r in enumerate(requests)]
    results = list(distributed._schedule(_Ray(), items, workers, None))
    assert sorted(r.index for r in results) == list(range(6))  # each once
    by_index = {r.index: r for r in results}
    for i in (0, 3, 5):  # big: only the larger device fits it
        assert by_index[i].status == "done" and by_index[i].worker == "cuda" and by_index[i].device == "CUDA0"
        assert by_index[i].refused_by in ((), ("vulkan",))
    assert {by_index[1].status, by_index[4].status} == {"done"}
    assert by_index[2].status == "failed" and by_index[2].refused_by == ("vulkan", "cuda")
    assert by_index[2].error is not None and "it fits no worker" in by_index[2].error
    assert "128 wide does not fit" in by_index[2].error
    assert sorted(vulkan.ran + cuda.ran) == [0, 1, 3, 4, 5]  # every item ran once, where it fit
    assert 0 not in vulkan.ran and 3 not in vulkan.ran and 5 not in vulkan.ran


# --- batches on the cluster -----------------------------------------------------------
@pytest.mark.slow
def test_batch_frames_equal_one_pipeline_s_and_an_unfittable_request_fails_alone(cluster, models, reference):
    requests: list[Any] = [REQUESTS[0], UNFITTABLE, REQUESTS[1], REQUESTS[2]]
    results = list(distributed.generate_batch(requests, models=models, resources_per_worker=CPU_WORKER))
    assert sorted(r.index for r in results) == [0, 1, 2, 3]  # each once
    by_index = {r.index: r for r in results}
    refused = by_index.pop(1)
    assert refused.status == "failed" and refused.video is None
    assert refused.error is not None and "it fits no worker" in refused.error and "does not fit on CPU" in refused.error
    assert len(refused.refused_by) == 2  # both workers' pre-flights said no
    for index, expected in zip((0, 2, 3), reference[:3], strict=True):
        r = by_index[index]
        assert r.status == "done" and r.ok, r
        assert r.attempts == 1 and r.device == "CPU" and r.seed == requests[index]["seed"]
        assert r.video is not None and np.array_equal(r.video.frames, expected), f"item {index}"
        assert r.seconds is not None and r.seconds > 0
    assert len({r.worker for r in by_index.values()}) == 2  # both workers generated


@pytest.mark.slow
def test_a_worker_killed_mid_clip_has_its_item_completed_on_the_other(cluster, models, reference):
    # item 1 takes 12 steps, the others 2: when the first result arrives, item 1's worker is mid-clip
    long = dict(REQUESTS[1], steps=12)
    with wanpy.WanPipeline(**models, n_threads=1, progress=False) as pipe:
        long_frames = _frames(pipe, long)
    expected = {0: reference[0], 1: long_frames, 2: reference[2], 3: reference[3]}
    results, killed = [], None
    for result in distributed.generate_batch([REQUESTS[0], long, REQUESTS[2], REQUESTS[3]], models=models,
                                             resources_per_worker=CPU_WORKER):
        results.append(result)
        if killed is None:
            assert result.index == 0
            prefix, _, number = result.worker.rpartition("-")
            killed = f"{prefix}-{1 - int(number)}"  # the other worker, generating item 1
            ray.kill(ray.get_actor(killed))
    assert sorted(r.index for r in results) == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert all(r.status == "done" for r in results), results
    by_index = {r.index: r for r in results}
    assert by_index[1].attempts == 2 and by_index[1].worker != killed  # started twice, finished on the survivor
    assert [r.index for r in results if r.attempts == 2] == [1]
    for r in results:
        assert r.video is not None and np.array_equal(r.video.frames, expected[r.index]), f"item {r.index}"


@pytest.mark.slow
def test_more_workers_than_the_cluster_holds_is_refused_before_loading(cluster, models):
    with pytest.raises(ValueError, match=r"the Ray cluster's nodes hold 2 worker\(s\) of \{'CPU': 1.0\}"):
        next(distributed.generate_batch(REQUESTS[:1], models=models, num_workers=3, resources_per_worker=CPU_WORKER))
    with pytest.raises(ValueError, match=r"nodes hold 0 worker\(s\) of \{'GPU': 1.0\}"):
        next(distributed.generate_batch(REQUESTS[:1], models=models))  # the default asks for GPUs
    with pytest.raises(ValueError, match="ray_address='10.0.0.1:6379': this process is already connected"):
        distributed.generate_batch(REQUESTS[:1], models=models, ray_address="10.0.0.1:6379")


@pytest.mark.slow
def test_batch_cli_writes_a_webm_and_a_json_line_per_request(cluster, models, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(dict(r, num_frames=9)) + "\n" for r in REQUESTS[:2]))
    out = tmp_path / "clips"
    out.mkdir()
    result = _cli("batch", str(requests), "--diffusion-model", models["diffusion_model"], "--vae", models["vae"],
                  "--output-dir", str(out), "--cpus-per-worker", "1", "--ray-address", cluster)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1]
    for line in lines:
        assert line["status"] == "done" and line["request"]["seed"] == REQUESTS[line["index"]]["seed"]
        path = Path(line["path"])
        assert path == out / f"{line['index']:05d}.webm"
        info = wanpy.probe_video(path)
        assert info.frame_count == 9 and (info.width, info.height) == (32, 32)
    assert sorted(p.name for p in out.iterdir()) == ["00000.webm", "00001.webm"]  # no temporary file left


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_generations_at_their_next_step(cluster, models, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(dict(r, steps=30)) + "\n" for r in REQUESTS[:3]))
    out = tmp_path / "clips"
    out.mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-m", "wanpy", "-v", "batch", str(requests), "--diffusion-model", models["diffusion_model"],
         "--vae", models["vae"], "--output-dir", str(out), "--cpus-per-worker", "1", "--ray-address", cluster],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_DEDUP_LOGS": "0"},
        # a shell's background job (CI under nohup) ignores SIGINT, and Python keeps an inherited SIG_IGN
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert driver.stderr is not None
        for line in driver.stderr:  # the workers' logs, forwarded by Ray
            if "sampling step 2/30" in line:
                break
        driver.send_signal(signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 130, stderr
    assert "the batch was interrupted (Ctrl-C): 3 item(s) cancelled" in stderr
    lines = sorted((json.loads(line) for line in stdout.splitlines()), key=lambda line: line["index"])
    assert [line["index"] for line in lines] == [0, 1, 2]  # a line per item, none lost
    started = [line for line in lines if line["worker"] is not None]
    assert len(started) == 2 and all(line["status"] == "cancelled" for line in lines)
    for line in started:
        assert 2 <= line["steps_done"] < 30, line
        assert "the batch was interrupted" in line["error"]
    assert lines[2]["error"] == "not started: the batch was interrupted"
    assert list(out.iterdir()) == []  # no partial file


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanpy", *args], capture_output=True, text=True, timeout=600)
