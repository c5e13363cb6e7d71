"""The page at ``/`` of ``wanpy serve`` in a real browser: Debian's chromium, headless, driven through
the Chrome DevTools protocol, fills its form from the query string, is clicked to submit a tiny generation and
plays the finished WebM in its ``<video>``. A screenshot of the end state is kept as a test artifact:
``serve-page.png`` in ``$WANPY_TEST_ARTIFACTS`` (default ``build/test-artifacts/``).

Without chromium the test fails (``apt-get install chromium``); ``WANPY_TEST_BROWSER=0`` skips it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from conftest import REPO
from serve_harness import STARTUP_TIMEOUT_S, Server, start_server

pytestmark = pytest.mark.slow

PAGE_QUERY = "?prompt=a%20fox&size=32x32&frames=5&steps=2&seed=1"  # fills the form; a click submits it
# ~5 s on an idle 2-core machine, but minutes while a parallel build holds the cores
GENERATION_TIMEOUT_S = 300

# what the page shows; {} when the page has not loaded yet. "videoShown": rendered, whatever its hidden
# attribute says (an author style's display overrides the attribute's)
PAGE_STATE_JS = """(() => {
  const $ = (id) => document.getElementById(id);
  if (!$("video")) return {};
  return {state: $("video").dataset.state || "", status: $("status").textContent, error: $("error").textContent,
          videoShown: getComputedStyle($("video")).display !== "none"};
})()"""
# the <video> once its first frame is decoded (HAVE_CURRENT_DATA) or decoding failed, waiting at most 60 s
VIDEO_JS = """(async () => {
  const video = document.getElementById("video");
  const deadline = Date.now() + 60000;
  while (video.readyState < 2 && !video.error && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const box = video.getBoundingClientRect();
  return {hidden: video.hidden, display: getComputedStyle(video).display, width: box.width, height: box.height,
          src: video.src, readyState: video.readyState, duration: video.duration,
          error: video.error && video.error.message, videoWidth: video.videoWidth, videoHeight: video.videoHeight};
})()"""


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals, *, group: bool = False) -> None:
    """``sig`` to the process (or to its process group), SIGKILL if it has not exited a minute later."""
    def send(s: signal.Signals) -> None:
        if group:
            os.killpg(process.pid, s)
        else:
            process.send_signal(s)

    if process.poll() is None:
        send(sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser, checked before ``server`` loads a model (the test asks for it first)."""
    if os.environ.get("WANPY_TEST_BROWSER") == "0":
        pytest.skip("WANPY_TEST_BROWSER=0: the page is not tested in a browser")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium); "
                    "set WANPY_TEST_BROWSER=0 to skip this test", pytrace=False)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``wanpy serve`` with the random-weight kit, stopped by SIGINT (as Ctrl-C)."""
    results = tmp_path_factory.mktemp("serve-page") / "results"
    results.mkdir()
    server = start_server(results)
    try:
        yield server
    finally:
        server.stop()


class Browser:
    """Headless chromium and a DevTools protocol connection to its page."""

    def __init__(self, executable: str, profile: Path) -> None:
        # its own session: SIGTERM to the group ends chromium's helper processes too.
        # --no-sandbox: chromium's sandbox refuses to run as root (CI); --disable-gpu: none here
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=900,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
                targets = json.load(response)
            page = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            # without an Origin header: chromium refuses origins not allowed by --remote-allow-origins
            self.ws = websocket.create_connection(page, timeout=120, suppress_origin=True)
        except BaseException:
            _stop(self.process, signal.SIGTERM, group=True)
            raise
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def _devtools_port(self, port_file: Path) -> int:
        """Chromium writes the port it chose (``--remote-debugging-port=0``) to its profile."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chromium exited ({self.process.returncode}) before it listened")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            if lines:
                return int(lines[0])
            time.sleep(0.1)
        raise AssertionError(f"chromium did not write {port_file.name} in {STARTUP_TIMEOUT_S} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command's result; the events that arrive meanwhile are kept for ``navigate``."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while (message := json.loads(self.ws.recv())).get("id") != self._id:
            self._events.append(message)
        if "error" in message:
            raise AssertionError(f"{method}: {message['error']}")
        result: dict[str, Any] = message["result"]
        return result

    def navigate(self, url: str) -> None:
        """Open url and wait for its load event (the page's script has then run)."""
        self.call("Page.enable")
        self._events.clear()
        self.call("Page.navigate", url=url)
        while not any(event.get("method") == "Page.loadEventFired" for event in self._events):
            self._events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression, a promise's once it settles."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        _stop(self.process, signal.SIGTERM, group=True)


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(chromium, tmp_path / "profile")
    yield browser
    browser.close()


@pytest.fixture
def artifacts() -> Path:
    folder = Path(os.environ.get("WANPY_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_generates_and_plays_a_video(chromium: str, server: Server, browser: Browser, artifacts: Path) -> None:
    browser.navigate(f"{server.url}/{PAGE_QUERY}")
    assert browser.evaluate("document.getElementById('prompt').value") == "a fox"
    browser.evaluate("document.getElementById('submit').click()")  # the query string alone never submits
    deadline = time.monotonic() + GENERATION_TIMEOUT_S
    page = browser.evaluate(PAGE_STATE_JS)
    shown_early = False  # the (empty) player on screen before the video is ready
    while page.get("state") != "ready" and not page.get("error") and time.monotonic() < deadline:
        shown_early |= page.get("videoShown", False)
        time.sleep(1)
        page = browser.evaluate(PAGE_STATE_JS)
    video = browser.evaluate(VIDEO_JS) if page.get("state") == "ready" else None
    # before the asserts: the end state is worth seeing most when the test fails
    screenshot = artifacts / "serve-page.png"
    browser.screenshot(screenshot)

    assert page.get("state") == "ready", (
        f"the page did not show the video (waited at most {GENERATION_TIMEOUT_S} s): {page} "
        f"(screenshot: {screenshot})\n{server.log_tail()}")
    assert page["error"] == ""
    assert page["status"] == "completed: 5 frames, 32x32, seed 1"
    assert not shown_early, "the <video> was displayed before the video was ready (its hidden attribute had no effect)"
    assert video is not None
    assert not video["hidden"] and video["display"] != "none" and video["width"] > 0 and video["height"] > 0, video
    assert video["src"].startswith("blob:"), video
    # chromium decoded the VP9 WebM: no media error, its first frame at the requested size, 5 frames at 16 fps
    assert video["error"] is None and video["readyState"] >= 2, video
    assert (video["videoWidth"], video["videoHeight"]) == (32, 32), video
    assert video["duration"] == pytest.approx(5 / 16, abs=1 / 16), video
    assert screenshot.stat().st_size > 5 * 1024
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
