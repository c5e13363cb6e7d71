"""The jobs of ``wanpy serve``: a bounded queue, one generation at a time on the loaded model set,
progress and cancelling, results on disk under a size quota with expiry.

Job ids are random (``video_`` and 32 hex digits); a result's file name is made from the id, never
from anything a request says. Results are written atomically (``Video.save``), and the server's
own files left in the results folder by an earlier process (finished or half-written) are removed
when the store starts: jobs do not outlive their server.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wanpy.display import png_bytes
from wanpy.errors import AllocationTooLargeError, Cancelled, WanpyError
from wanpy.paths import temp_file_pattern

if TYPE_CHECKING:
    from wanpy.pipeline import WanPipeline
    from wanpy.progress import Progress
    from wanpy.request import GenerationRequest

logger = logging.getLogger("wanpy.serve")

__all__ = ["Job", "JobStore", "QueueFull", "is_job_id"]

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "expired"]
FINISHED = ("completed", "failed", "cancelled", "expired")
MAX_FINISHED_RECORDS = 10_000
_ID = re.compile(r"video_([0-9a-f]{32})")
_RESULT = r"[0-9a-f]{32}\.webm"
_TEMP = temp_file_pattern(_RESULT)  # the temporary files of the results' atomic writes


def is_job_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


class QueueFull(Exception):
    def __init__(self, queued: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({queued} jobs waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One generation and what happened to it (``version`` grows with every change)."""

    id: str
    request: GenerationRequest
    created: float
    status: Status = "queued"
    started: float | None = None
    completed: float | None = None
    phase: str | None = None
    step: int = 0
    steps: int = 0
    seed: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    path: Path | None = None
    size_bytes: int = 0
    preview_png: bytes | None = field(default=None, repr=False)
    version: int = 0
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def progress(self) -> int:
        """Percent: sampling makes 0-95, decoding and writing the rest."""
        if self.status == "completed":
            return 100
        if self.status != "in_progress" or not self.steps:
            return 0
        return min(95, int(95 * self.step / self.steps)) if self.phase != "vae_decode" else 95


class JobStore:
    """Jobs of one pipeline: ``submit`` queues (``QueueFull`` past ``max_queue`` waiting), one
    worker thread generates them in order."""

    def __init__(self, pipe: WanPipeline, results_dir: str | os.PathLike[str], *, max_queue: int = 8,
                 ttl_seconds: float = 3600.0, quota_bytes: int = 2 * 2**30) -> None:
        self.pipe = pipe
        self.results_dir = Path(results_dir)
        self.max_queue = max_queue
        self.ttl_seconds = ttl_seconds
        self.quota_bytes = quota_bytes
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._remove_own_files()
        self._worker = threading.Thread(target=self._work, name="wanpy-serve-jobs", daemon=True)
        self._worker.start()

    # --- what the routes call ---------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Job:
        with self._changed:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(len(self._queue), self._retry_after())
            job = Job(id=f"video_{uuid.uuid4().hex}", request=request, created=time.time())
            finished = [j for j in self._jobs.values() if j.status in FINISHED]
            for old in finished[:max(0, len(finished) - MAX_FINISHED_RECORDS)]:  # the oldest records go first
                self._drop_file(old)
                del self._jobs[old.id]
            self._jobs[job.id] = job
            self._queue.append(job.id)
            self._changed.notify_all()
        logger.info("job %s queued: %s", job.id, request)
        return job

    def check_room(self) -> None:
        """``QueueFull`` now when ``submit`` would raise it (a cheap refusal before the pre-flight)."""
        with self._changed:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(len(self._queue), self._retry_after())

    def get(self, job_id: str) -> Job | None:
        with self._changed:
            self._expire()
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._changed:
            self._expire()
            return list(self._jobs.values())

    def queue_position(self, job: Job) -> int:
        with self._changed:
            return self._queue.index(job.id) + 1 if job.id in self._queue else 0

    def cancel(self, job: Job) -> bool:
        """Cancel a queued job now, a running one at its next step; False when it had finished."""
        with self._changed:
            if job.status in FINISHED:
                return False
            job.cancel.set()
            if job.status == "queued":
                self._queue.remove(job.id)
                self._finish(job, "cancelled", "cancelled", "job cancelled by client")
            return True

    def delete(self, job: Job) -> None:
        """Cancel it if unfinished, remove its file and forget it."""
        self.cancel(job)
        with self._changed:
            self._drop_file(job)
            self._jobs.pop(job.id, None)
            self._changed.notify_all()

    def wait_change(self, job: Job, version: int, timeout: float) -> None:
        """Until ``job.version`` differs from ``version`` (or ``timeout`` s)."""
        with self._changed:
            self._changed.wait_for(lambda: job.version != version or self._stopping, timeout)

    def stop(self) -> None:
        """Cancel everything without waiting: the running generation stops at its next step, queued jobs
        end cancelled, and no job starts after."""
        with self._changed:
            self._stopping = True
            for job in self._jobs.values():
                job.cancel.set()
            while self._queue:
                self._finish(self._jobs[self._queue.popleft()], "cancelled", "server_stopped",
                             "the server stopped before this job ran")
            self._changed.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def close(self) -> None:
        """``stop``, then wait for the running generation to return."""
        self.stop()
        self._worker.join(timeout=600)

    # --- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue) or self._stopping, timeout=60)
                self._expire()  # also when nobody asks: results go at their ttl
                if self._stopping:
                    return
                if not self._queue:
                    continue
                job = self._jobs[self._queue.popleft()]
                job.status, job.started = "in_progress", time.time()
                self._bump(job)
            try:
                self._run(job)
            except Exception:  # the next job must still run
                logger.exception("job %s: unexpected error", job.id)
                with self._changed:
                    if job.status not in FINISHED:
                        self._finish(job, "failed", "internal_error", "internal error (the server's log has "
                                                                      "the details)")

    def _run(self, job: Job) -> None:
        def on_progress(p: Progress) -> bool:
            # encoded before taking the lock that every status read takes
            png = None if p.preview is None else png_bytes(p.preview[len(p.preview) // 2])
            with self._changed:
                job.phase, job.step, job.steps = p.phase, p.step, p.steps
                if png is not None:
                    job.preview_png = png
                self._bump(job)
            return not job.cancel.is_set()

        start = time.perf_counter()
        try:
            video = self.pipe.generate_video(job.request, progress=False, callback=on_progress)
            with self._changed:
                job.phase = "writing"
                self._bump(job)
            target = self.results_dir / f"{job.id.removeprefix('video_')}.webm"
            video.save(target)
        except Cancelled:
            outcome: tuple[Status, str | None, str | None] = ("cancelled", "cancelled", "job cancelled by client")
        except AllocationTooLargeError as exc:
            outcome = ("failed", "does_not_fit", str(exc))
        except (WanpyError, ValueError, TypeError, OSError, MemoryError) as exc:
            outcome = ("failed", "generation_failed", f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("job %s: unexpected error", job.id)
            outcome = ("failed", "internal_error", "internal error (the server's log has the details)")
        else:
            self._durations.append(time.perf_counter() - start)
            with self._changed:
                # deleted or cancelled while its file was being written: the file goes too
                dropped = job.id not in self._jobs or job.cancel.is_set()
                if not dropped:
                    job.path, job.size_bytes, job.seed = target, target.stat().st_size, video.seed
                    self._finish(job, "completed", None, None)
                    self._keep_quota()
            if not dropped:
                logger.info("job %s completed in %.1f s: %d B", job.id, time.perf_counter() - start,
                            job.size_bytes)
                return
            target.unlink(missing_ok=True)
            outcome = ("cancelled", "cancelled", "job cancelled by client")
        with self._changed:
            self._finish(job, *outcome)
        logger.info("job %s %s: %s", job.id, outcome[0], outcome[2])

    # --- bookkeeping (the condition's lock held) ------------------------------------------------
    def _bump(self, job: Job) -> None:
        job.version += 1
        self._changed.notify_all()

    def _finish(self, job: Job, status: Status, code: str | None, message: str | None) -> None:
        job.status, job.error_code, job.error_message, job.completed = status, code, message, time.time()
        # the record outlives the generation: its input images need not
        job.request = dataclasses.replace(job.request, init_image=None, end_image=None)
        self._bump(job)

    def _retry_after(self) -> int:
        per_job = sum(self._durations) / len(self._durations) if self._durations else 30.0
        return max(1, int(per_job))

    def _expire(self) -> None:
        """Results past their ttl lose their file; a finished job's record goes after two ttls."""
        now = time.time()
        for job in list(self._jobs.values()):
            age = None if job.completed is None else now - job.completed
            if age is None:
                continue
            if job.status == "completed" and age > self.ttl_seconds:
                self._drop_file(job)
                job.status = "expired"
                self._bump(job)
            elif job.status in FINISHED and age > 2 * self.ttl_seconds:
                del self._jobs[job.id]

    def _keep_quota(self) -> None:
        done = sorted((j for j in self._jobs.values() if j.status == "completed"), key=lambda j: j.completed or 0)
        total = sum(j.size_bytes for j in done)
        for job in done[:-1]:  # the newest result stays, whatever its size
            if total <= self.quota_bytes:
                break
            total -= job.size_bytes
            self._drop_file(job)
            job.status = "expired"
            self._bump(job)
            logger.info("job %s expired early: the results folder is past its quota of %d B", job.id,
                        self.quota_bytes)

    def _drop_file(self, job: Job) -> None:
        if job.path is not None:
            try:
                job.path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove %s: %s", job.path, exc)
            job.path, job.size_bytes = None, 0

    def _remove_own_files(self) -> None:
        for name in os.listdir(self.results_dir):
            if re.fullmatch(_RESULT, name) or _TEMP.fullmatch(name):
                os.remove(self.results_dir / name)
                logger.info("removed %s, left by an earlier server", name)
