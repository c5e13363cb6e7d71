"""``wanpy serve``: a real uvicorn server in a subprocess on 127.0.0.1 with the random-weight 1.3B kit,
driven by the official ``openai`` client and by plain HTTP (httpx) in sd.cpp's server schema."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from serve_harness import Server, start_server

import wanpy
from wanpy.testing import cached_model_set

pytestmark = [pytest.mark.slow,
              # the client marks its Videos API as OpenAI's (Sora) and warns that it will shut down
              pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")]

HTTP = httpx.Client(timeout=120)  # a pre-flight on a busy 2-core machine can take seconds
LONG = {"size": "64x64", "num_frames": 5, "steps": 40}  # a minute or more: long enough to cancel or queue behind


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("results"), "--max-queue", "2")
    yield s
    s.stop()


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    # max_retries=0: a 429 must reach the test, not be retried
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _wait(get: Any, done: set[str], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if (value["status"] if isinstance(value, dict) else value.status) in done:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not {done} after {timeout} s: {value}")


def _tiny(client: openai.OpenAI, prompt: str) -> Any:
    return client.videos.create(prompt=prompt, size="32x32", extra_body={"num_frames": 5, "steps": 2})


def _wanpy_status(server: Server, video_id: str) -> dict[str, Any]:
    return HTTP.get(f"{server.url}/v1/videos/{video_id}").json()


def _drain(server: Server) -> None:
    """Cancel and forget every job, so the next test starts with an idle server."""
    for video in HTTP.get(f"{server.url}/v1/videos", params={"limit": "100"}).json()["data"]:
        HTTP.delete(f"{server.url}/v1/videos/{video['id']}")
    _wait(lambda: {"status": "idle" if not HTTP.get(f"{server.url}/v1/videos").json()["data"] else "busy"}, {"idle"})


# --- OpenAI's Videos API, with the official client --------------------------------------------------
def test_openai_client_round_trip(server: Server, client: openai.OpenAI, tmp_path: Path) -> None:
    video = client.videos.create(model="wan2.1-t2v-1.3b", prompt="a red fox", size="32x32",
                                 extra_body={"num_frames": 5, "steps": 2, "seed": 7})
    assert video.status in ("queued", "in_progress") and video.id.startswith("video_") and video.size == "32x32"
    video = _wait(lambda: client.videos.retrieve(video.id), {"completed", "failed"})
    assert video.status == "completed", video.error
    assert video.progress == 100 and video.seconds == "0.3125" and video.completed_at is not None
    path = tmp_path / "fox.webm"
    client.videos.download_content(video.id).write_to_file(path)
    info = wanpy.probe_video(path)
    assert (info.frame_count, info.width, info.height, info.fps) == (5, 32, 32, 16)
    assert info.request is not None and info.request["seed"] == 7  # the request, as every wanpy WebM carries it
    assert video.id in [v.id for v in client.videos.list().data]
    assert client.videos.delete(video.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    assert not any(server.results.iterdir())  # its file went with it


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"prompt": "x", "frames": 5}, "frames", "frames: unknown field"),
    ({"prompt": "x", "steps": 0}, "steps", "steps must be >= 1, got 0"),
    ({"prompt": "x", "steps": 2.5}, "steps", "steps: must be an integer, got '2.5'"),
    ({"prompt": "x", "seconds": "4"}, "seconds", "duration=4.0 s at 16 fps is 64 frames, not 4k+1: use 61 or 65"),
    ({"prompt": "x", "size": "32x33"}, "size", "height 33"),
    ({"prompt": "x" * 20_000}, "prompt", "prompt is 20000 bytes"),
    ({"prompt": "x", "model": "sora-2"}, "model", "this server runs 'wan2.1-t2v-1.3b', not 'sora-2'"),
])
def test_openai_client_s_bad_requests_get_422_naming_the_field(server: Server, client: openai.OpenAI,
                                                               body: dict[str, Any], param: str, message: str) -> None:
    """The client sends multipart form fields (text): their values are parsed strictly ("2.5" is no integer)."""
    own = ("prompt", "model", "seconds", "size")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.videos.create(**{k: v for k, v in body.items() if k in own},
                             extra_body={k: v for k, v in body.items() if k not in own})
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert message in error["message"], error
    assert HTTP.get(f"{server.url}/v1/videos").json()["data"] == []  # nothing was queued


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"prompt": "x", "num_frames": "5"}, "num_frames", "num_frames: Input should be a valid integer"),
    ({"prompt": "x", "vae_tiling": 1}, "vae_tiling", "vae_tiling: Input should be a valid boolean"),
    ({"prompt": "x", "steps": 2.0}, "steps", "steps: Input should be a valid integer"),
    ({"prompt": ["x"]}, "prompt", "prompt: Input should be a valid string"),
    ({"num_frames": 5}, "prompt", "prompt: Field required"),
])
def test_json_bodies_are_typed_strictly(server: Server, body: dict[str, Any], param: str, message: str) -> None:
    answer = HTTP.post(f"{server.url}/v1/videos", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and message in error["message"], error


def test_an_input_reference_is_the_init_image(server: Server, client: openai.OpenAI, tmp_path: Path) -> None:
    """Sent as a multipart file by the client, decoded, and checked as the family's init image: this
    text-to-video model takes none, so the 422 names the field."""
    image = tmp_path / "first.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.videos.create(prompt="a fox", size="32x32", input_reference=image)
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "input_reference", error
    assert "takes no init_image" in error["message"]
    image.write_bytes(b"not an image")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.videos.create(prompt="a fox", size="32x32", input_reference=image)
    assert "input_reference: is not an image" in info.value.body["message"]  # type: ignore[index]


def test_a_request_that_does_not_fit_is_refused_at_submission(server: Server) -> None:
    answer = HTTP.post(f"{server.url}/v1/videos", json={"prompt": "x", "size": "512x512", "num_frames": 657})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "does_not_fit" and "does not fit on CPU" in error["message"]
    assert error["required_bytes"] > error["limit_bytes"] > 0 and error["suggestions"]
    assert HTTP.get(f"{server.url}/v1/videos").json()["data"] == []  # never queued
    auto = HTTP.post(f"{server.url}/v1/videos", json={"prompt": "x", "size": "512x512", "num_frames": 657,
                                                      "fit": "auto"})
    assert auto.status_code == 422 and auto.json()["error"]["param"] == "fit"  # it would reload the weights
    assert "change flash_attention" in auto.json()["error"]["message"]


def test_http_level_refusals(server: Server) -> None:
    post = lambda **kw: HTTP.post(f"{server.url}/v1/videos", **kw)  # noqa: E731
    assert post(content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    assert post(content=b"prompt=x", headers={"Content-Type": "text/plain"}).status_code == 415
    big = post(content=b"x" * (33 * 2**20), headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "larger than" in big.json()["error"]["message"]
    assert HTTP.get(f"{server.url}/v1/videos/video_{'0' * 32}").status_code == 404
    assert HTTP.get(f"{server.url}/v1/videos/..%2F..%2Fetc%2Fpasswd").status_code == 404
    unknown = HTTP.get(f"{server.url}/v1/videos", params={"page": "2"})
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "page"
    error = HTTP.get(f"{server.url}/openapi.json")
    assert error.status_code == 200  # FastAPI's schema: what the routes are
    assert "Traceback" not in big.text
    twice = post(content=b'{"prompt": "x", "steps": 2, "steps": 40}', headers={"Content-Type": "application/json"})
    assert twice.status_code == 422 and twice.json()["error"]["message"] == "steps: given more than once"
    huge = post(content=b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", headers={"Content-Type": "application/json"})
    assert huge.status_code == 422


def test_other_sites_cannot_reach_a_loopback_server(server: Server) -> None:
    """Without an API key only loopback Host names are served (no DNS rebinding), and a request from
    another origin (a web page's form posting cross-site) is refused."""
    rebound = HTTP.get(f"{server.url}/v1/videos", headers={"Host": "attacker.example"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "bad_host"
    cross = HTTP.post(f"{server.url}/v1/videos", headers={"Origin": "https://attacker.example"},
                      data={"prompt": "x", "size": "32x32", "num_frames": "5", "steps": "2"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_origin"
    same = HTTP.get(f"{server.url}/v1/models", headers={"Origin": server.url})
    assert same.status_code == 200
    assert HTTP.get(f"{server.url}/v1/videos").json()["data"] == []


def test_cancel_stops_a_running_generation_at_its_next_step(server: Server, client: openai.OpenAI) -> None:
    video = client.videos.create(prompt="a fox", size=LONG["size"], extra_body={"num_frames": 5, "steps": 40})
    _wait(lambda: _wanpy_status(server, video.id), {"in_progress"})
    _wait(lambda: {"status": "stepping" if _wanpy_status(server, video.id)["step"] >= 1 else "not yet"}, {"stepping"})
    answer = HTTP.post(f"{server.url}/v1/videos/{video.id}/cancel")
    assert answer.status_code == 200
    done = _wait(lambda: _wanpy_status(server, video.id), {"failed"})
    assert done["wanpy_status"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert 1 <= done["step"] < 40
    assert HTTP.post(f"{server.url}/v1/videos/{video.id}/cancel").status_code == 409  # finished already
    assert not any(server.results.iterdir())  # no partial file
    _drain(server)


def test_a_full_queue_answers_429_with_retry_after(server: Server, client: openai.OpenAI) -> None:
    running = client.videos.create(prompt="running", size=LONG["size"], extra_body={"num_frames": 5, "steps": 40})
    _wait(lambda: _wanpy_status(server, running.id), {"in_progress"})
    queued = [_tiny(client, f"queued {i}") for i in range(2)]  # --max-queue 2
    assert [_wanpy_status(server, v.id)["queue_position"] for v in queued] == [1, 2]
    with pytest.raises(openai.RateLimitError) as info:
        _tiny(client, "one too many")
    assert int(info.value.response.headers["Retry-After"]) >= 1
    assert info.value.body["code"] == "queue_full"  # type: ignore[index]
    HTTP.delete(f"{server.url}/v1/videos/{queued[0].id}")  # a queued job cancelled and forgotten
    assert _wanpy_status(server, queued[1].id)["queue_position"] == 1
    _drain(server)


def test_progress_as_server_sent_events(server: Server, client: openai.OpenAI) -> None:
    video = client.videos.create(prompt="a fox", size="32x32", extra_body={"num_frames": 5, "steps": 3})
    events = []
    with HTTP.stream("GET", f"{server.url}/v1/videos/{video.id}/events", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert events[-1]["status"] == "completed" and events[-1]["progress"] == 100
    steps = [e["step"] for e in events if e["phase"] == "sampling"]
    assert steps == sorted(steps) and 3 in steps  # every step seen, in order
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    _drain(server)


# --- sd.cpp's server schema ----------------------------------------------------------------------
def test_sdcpp_schema_round_trip(server: Server) -> None:
    caps = HTTP.get(f"{server.url}/sdcpp/v1/capabilities").json()
    assert caps["supported_modes"] == ["vid_gen"] and caps["model"]["name"] == "wan2.1-t2v-1.3b"
    body = json.loads(json.dumps(caps["defaults_by_mode"]["vid_gen"]))
    body.update(prompt="a heron", width=32, height=32, video_frames=5, seed=3)
    body["sample_params"]["sample_steps"] = 2
    submitted = HTTP.post(f"{server.url}/sdcpp/v1/vid_gen", json=body)  # the server's own defaults, sent back
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["kind"] == "vid_gen" and job["status"] == "queued" and job["poll_url"] == f"/sdcpp/v1/jobs/{job['id']}"
    done = _wait(lambda: HTTP.get(server.url + job["poll_url"]).json(), {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    result = done["result"]
    assert (result["output_format"], result["mime_type"], result["fps"], result["frame_count"]) == (
        "webm", "video/webm", 16, 5)
    webm = base64.b64decode(result["b64_json"])
    assert webm[:4] == b"\x1aE\xdf\xa3"  # EBML: a WebM
    assert HTTP.post(f"{server.url}/sdcpp/v1/jobs/{job['id']}/cancel").status_code == 409
    _drain(server)


def test_sdcpp_cancel_of_a_queued_job(server: Server) -> None:
    running = HTTP.post(f"{server.url}/sdcpp/v1/vid_gen", json={"prompt": "r", "width": 64, "height": 64,
                                                                  "video_frames": 5,
                                                                  "sample_params": {"sample_steps": 40}}).json()
    queued = HTTP.post(f"{server.url}/sdcpp/v1/vid_gen", json={"prompt": "q", "width": 32, "height": 32,
                                                                 "video_frames": 5}).json()
    answer = HTTP.post(f"{server.url}/sdcpp/v1/jobs/{queued['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert answer.json()["started"] is None and answer.json()["error"]["code"] == "cancelled"
    HTTP.post(f"{server.url}/sdcpp/v1/jobs/{running['id']}/cancel")
    _drain(server)


@pytest.mark.parametrize(("body", "param", "message"), [
    # the gateway of the users' story: nested, so sd-server ignored it and made one frame
    ({"prompt": "x", "sample_params": {"video_frames": 161}}, "sample_params.video_frames",
     "sample_params.video_frames: unknown field; it belongs at the top level"),
    ({"prompt": "x", "video_frames": 34}, "video_frames", "video_frames: num_frames must be 4k+1"),
    ({"prompt": "x", "video_frames": 33.0}, "video_frames", "video_frames: Input should be a valid integer"),
    ({"prompt": "x", "sample_params": {"eta": 1.0}}, "sample_params.eta", "wanpy passes no eta"),
    ({"prompt": "x", "sample_params": {"guidance": {"img_cfg": 7.0}}}, "sample_params.guidance.img_cfg",
     "Wan has no image guidance"),
    ({"prompt": "x", "clip_skip": 2}, "clip_skip", "no CLIP layers to skip"),
    ({"prompt": "x", "output_format": "avi"}, "output_format", "WebM only"),
    ({"prompt": "x", "lora": [{"path": "/etc/passwd", "multiplier": 1.0}]}, "lora", "never touches its filesystem"),
    ({"prompt": "x", "vae_tiling_params": {"enabled": True, "rel_size_x": 0.5}}, "vae_tiling_params.rel_size_x",
     "relative tile sizes"),
    ({"prompt": "x", "moe_boundary": 0.9}, "moe_boundary", "moe_boundary"),
    ({"prompt": "x", "batch_count": 2}, "batch_count", "batch_count: unknown field"),
])
def test_sdcpp_shape_refuses_what_sd_server_would_ignore(server: Server, body: dict[str, Any], param: str,
                                                          message: str) -> None:
    answer = HTTP.post(f"{server.url}/sdcpp/v1/vid_gen", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert answer.json()["detail"][0]["loc"] == ["body", *param.split(".")]


# --- safe by default ---------------------------------------------------------------------------------
def test_binding_beyond_loopback_needs_an_api_key(tmp_path: Path) -> None:
    kit = cached_model_set()
    refused = subprocess.run([sys.executable, "-m", "wanpy", "serve", "--diffusion-model", str(kit.diffusion_model),
                              "--vae", str(kit.vae), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k != "WANPY_API_KEY"})
    assert refused.returncode == 2 and "binding 0.0.0.0 (not the loopback interface) needs an API key" in refused.stderr


def test_api_key_and_restart_leaves_no_partial_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    # what a server killed mid-write leaves: a finished result and a half-written temporary file
    (results / f"{'a' * 32}.webm").write_bytes(b"old")
    (results / f".{'b' * 32}.webm.0123abcd.part").write_bytes(b"partial")
    (results / "notes.txt").write_text("not the server's")
    key = "k" * 24
    server = start_server(results, env={"WANPY_API_KEY": key})
    try:
        assert sorted(p.name for p in results.iterdir()) == ["notes.txt"]  # only its own files went
        assert HTTP.get(f"{server.url}/v1/models").status_code == 401
        assert HTTP.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as client:
            video = client.videos.create(prompt="a fox", size=LONG["size"], extra_body={"num_frames": 5, "steps": 40})
            _wait(lambda: client.videos.retrieve(video.id), {"in_progress"})
        assert HTTP.get(f"{server.url}/").status_code == 200  # the page itself asks for the key
    finally:
        server.process.kill()  # no shutdown at all, mid-generation
        server.process.wait()
    server = start_server(results, env={"WANPY_API_KEY": key})
    try:
        assert sorted(p.name for p in results.iterdir()) == ["notes.txt"]
    finally:
        log = server.stop()
    assert "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)  # JSON lines
