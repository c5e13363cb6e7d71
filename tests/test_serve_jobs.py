"""``wanpy.serve.jobs.JobStore`` with a stand-in pipeline (no model): the order of jobs, cancelling,
expiry and the results folder's quota, without a server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import wanpy
from wanpy.progress import Progress
from wanpy.serve.jobs import JobStore, QueueFull

REQUEST = wanpy.build_request("wan2.1-t2v-1.3b", "a fox", width=32, height=32, num_frames=5, steps=3, seed=1)


class _Result:
    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.seed = nbytes, 1

    def save(self, target: Path) -> None:
        target.write_bytes(b"x" * self.nbytes)


class _Pipe:
    """Generates by calling back once per step; ``gate`` holds each step until it is set."""

    def __init__(self, nbytes: int = 100) -> None:
        self.nbytes, self.gate, self.ran = nbytes, threading.Event(), []
        self.gate.set()

    def generate_video(self, request: Any, *, progress: bool, callback: Any) -> _Result:
        for step in range(1, request.steps + 1):
            self.gate.wait(30)
            if callback(Progress("sampling", step, request.steps, 0.0, 0.0)) is False:
                raise wanpy.Cancelled("cancelled by the callback")
        self.ran.append(request.prompt)
        return _Result(self.nbytes)


def _finished(store: JobStore, job: Any, timeout: float = 30) -> None:
    _until(store, job, lambda: job.status not in ("queued", "in_progress"), timeout)


def _until(store: JobStore, job: Any, condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {job}"
        store.wait_change(job, job.version, 0.5)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    stores: list[JobStore] = []

    def make(pipe: _Pipe, **kwargs: Any) -> JobStore:
        stores.append(JobStore(pipe, tmp_path, **kwargs))  # type: ignore[arg-type]
        return stores[-1]

    yield make
    for s in stores:
        s.close()


def test_jobs_run_in_order_and_a_full_queue_refuses(store: Any, tmp_path: Path) -> None:
    pipe = _Pipe()
    pipe.gate.clear()
    jobs = store(pipe, max_queue=2)
    first = jobs.submit(REQUEST)
    _until(jobs, first, lambda: first.status == "in_progress")
    waiting = [jobs.submit(REQUEST) for _ in range(2)]
    with pytest.raises(QueueFull) as info:
        jobs.submit(REQUEST)
    assert info.value.retry_after >= 1
    assert [jobs.queue_position(j) for j in (first, *waiting)] == [0, 1, 2]
    pipe.gate.set()
    for job in (first, *waiting):
        _finished(jobs, job)
        assert job.status == "completed" and job.progress == 100 and job.path is not None
    assert len({j.id for j in (first, *waiting)}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{j.id.removeprefix('video_')}.webm"
                                                                for j in (first, *waiting))


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_next_step(store: Any) -> None:
    pipe = _Pipe()
    pipe.gate.clear()
    jobs = store(pipe)
    running, queued = jobs.submit(REQUEST), jobs.submit(REQUEST)
    _until(jobs, running, lambda: running.status == "in_progress")
    assert jobs.cancel(queued) and queued.status == "cancelled" and queued.started is None
    assert jobs.cancel(running) and running.status == "in_progress"  # until its next step
    pipe.gate.set()
    _finished(jobs, running)
    assert running.status == "cancelled" and running.step == 1 and running.path is None
    assert not jobs.cancel(running)  # finished already
    assert pipe.ran == []


def test_results_expire_and_the_oldest_go_past_the_quota(store: Any, tmp_path: Path) -> None:
    jobs = store(_Pipe(nbytes=100), quota_bytes=250, ttl_seconds=60)
    done = []
    for _ in range(3):
        done.append(jobs.submit(REQUEST))
        _finished(jobs, done[-1])
    assert [j.status for j in done] == ["expired", "completed", "completed"]  # 300 B > 250 B: the oldest went
    assert done[0].path is None and len(list(tmp_path.iterdir())) == 2
    jobs.ttl_seconds = 0.01
    time.sleep(0.05)
    assert jobs.get(done[2].id) is not None and done[2].status == "expired"
    assert list(tmp_path.iterdir()) == []


def test_files_an_earlier_server_left_are_removed_and_no_others(store: Any, tmp_path: Path) -> None:
    own = [f"{'a' * 32}.webm", f".{'b' * 32}.webm.0123abcd.part"]
    for name in [*own, "notes.txt", f"{'c' * 31}.webm"]:
        (tmp_path / name).write_bytes(b"x")
    store(_Pipe())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", f"{'c' * 31}.webm"])


def test_a_job_deleted_while_its_video_is_written_leaves_no_file(store: Any, tmp_path: Path) -> None:
    class _SlowSave(_Pipe):
        def generate_video(self, request: Any, *, progress: bool, callback: Any) -> _Result:
            result = super().generate_video(request, progress=progress, callback=callback)
            callback(Progress("vae_decode", 1, 1, 0.0, 0.0))
            writing.set()
            assert proceed.wait(30)
            return result

    writing, proceed = threading.Event(), threading.Event()
    jobs = store(_SlowSave())
    job = jobs.submit(REQUEST)
    assert writing.wait(30)
    jobs.delete(job)
    proceed.set()
    _finished(jobs, job)
    assert job.status == "cancelled" and job.path is None
    assert list(tmp_path.iterdir()) == [] and jobs.get(job.id) is None


def test_stop_cancels_the_queue_and_the_running_job(store: Any) -> None:
    pipe = _Pipe()
    pipe.gate.clear()
    jobs = store(pipe)
    running, queued = jobs.submit(REQUEST), jobs.submit(REQUEST)
    _until(jobs, running, lambda: running.status == "in_progress")
    jobs.stop()
    assert queued.status == "cancelled" and queued.error_code == "server_stopped"
    pipe.gate.set()
    _finished(jobs, running)
    assert running.status == "cancelled"
