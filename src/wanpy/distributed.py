"""Batches of clips over a Ray cluster: one loaded pipeline per worker, results as they finish.

``generate_batch(requests, models=...)`` checks every request on the driver (the model files'
headers, every option: nothing is scheduled before the whole batch is valid), starts one Ray actor
per worker that loads the model set once, and hands each idle worker the next request. A worker
pre-flights each request on its own device: a request it cannot fit goes to another worker, and a
request that fits no worker is a failed item, never a failed batch. A worker that dies mid-clip
(killed, out of memory) has its item retried once on another worker. Ctrl-C on the driver cancels
every running generation at its next step and raises ``BatchInterrupted``. Needs the ``ray`` extra
(``pip install "wanpy[ray]"``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from wanpy.errors import AllocationTooLargeError, Cancelled, LoadError, WanpyError
from wanpy.model_set import check_model_files, family_of_files
from wanpy.paths import check_output_path, temp_file_pattern
from wanpy.request import GenerationRequest, build_request, check_loras
from wanpy.validation import check_int, check_max_vram, check_tiny_vae_use

if TYPE_CHECKING:
    from wanpy.progress import Progress
    from wanpy.video import Video

logger = logging.getLogger("wanpy.distributed")

__all__ = ["BatchInterrupted", "BatchResult", "generate_batch"]

Status = Literal["done", "failed", "cancelled"]

# the files of a model set; every other key of ``models`` is a WanPipeline load setting
MODEL_FILES = ("diffusion_model", "vae", "text_encoder", "high_noise_diffusion_model", "clip_vision", "tiny_vae")
LOAD_SETTINGS = ("flash_attention", "vae_tiling", "offload_to_cpu", "keep_vae_on_cpu", "n_threads", "device",
                 "preflight", "mmap", "vae_conv_direct", "tiny_vae_use", "max_vram")
RESOURCE_NAMES = ("CPU", "GPU")  # others are the cluster's custom resources, passed as they are
CANCEL_WAIT_SECONDS = 300.0  # how long an interrupted batch waits for its workers' next step
START_TIMEOUT_S = 1800.0  # how long a worker may take to be placed and load the models


@dataclass(frozen=True)
class BatchResult:
    """One item of a batch: ``index`` is its place in the requests given.

    ``status`` is "done" (``path`` is the WebM written, with ``output_dir``; else ``video`` holds
    the frames), "failed" (``error`` says why: no worker could fit it, the generation failed, or
    its worker died twice) or "cancelled". ``worker`` and ``device`` name where it ran last,
    ``attempts`` how many workers started it, ``refused_by`` the workers whose pre-flight refused
    it. ``seconds`` is the generation on the worker (``Video.timings.total``), ``load_seconds`` the
    worker's one load of the models (shared by every item it ran), ``queued_seconds``
    how long it waited after the batch started, ``steps_done`` the sampling steps a cancelled
    item had run."""

    index: int
    status: Status
    request: GenerationRequest = field(repr=False)
    path: str | None = None
    video: Video | None = field(default=None, repr=False)
    error: str | None = None
    worker: str | None = None
    node: str | None = None
    device: str | None = None
    attempts: int = 0
    refused_by: tuple[str, ...] = ()
    seed: int | None = None
    seconds: float | None = None
    load_seconds: float | None = None
    queued_seconds: float | None = None
    steps_done: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (the request as ``GenerationRequest.to_dict()``, no frames)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("request", "video")}
        out["refused_by"] = list(self.refused_by)
        out["request"] = self.request.to_dict()
        return out

    def __str__(self) -> str:
        where = f" on {self.worker} ({self.device})" if self.worker else ""
        if self.status == "done":
            what = self.path or (f"{self.video.num_frames} frames" if self.video is not None else "done")
            return f"#{self.index} done{where} in {self.seconds:.1f} s: {what}"
        return f"#{self.index} {self.status}{where}: {self.error}"


class BatchInterrupted(Cancelled):
    """Ctrl-C stopped a batch: every running generation was cancelled at its next step.
    ``results`` holds an entry for every item not yielded before (cancelled, not started, or
    finished while the batch was stopping)."""

    def __init__(self, message: str, *, results: tuple[BatchResult, ...]) -> None:
        super().__init__(message)
        self.results = results


# --- the driver's checks: everything before Ray starts --------------------------------
def generate_batch(requests: Iterable[GenerationRequest | Mapping[str, Any]], *, models: Mapping[str, Any],
                   num_workers: int | None = None, resources_per_worker: Mapping[str, float] | None = None,
                   output_dir: str | os.PathLike[str] | None = None,
                   ray_address: str | None = None) -> Iterator[BatchResult]:
    """Generate every request on a Ray cluster; yields a ``BatchResult`` per item as it finishes.

    ``requests``: ``GenerationRequest``s, or mappings of a ``prompt`` and ``wanpy.RequestOptions``
    (as one JSON line of ``wanpy batch``). ``models``: ``WanPipeline``'s keyword arguments, its
    model files (``diffusion_model``, ``vae``, ...; paths every worker can read) and load
    settings; each worker loads them once. ``resources_per_worker``: the Ray resources one worker
    holds (default ``{"GPU": 1}``; ``{"CPU": 2}`` runs on CPUs, and then each worker's
    ``n_threads`` defaults to its CPUs). ``num_workers``: default as many as the cluster's
    resources hold. ``output_dir``: each item's WebM is written there atomically as
    ``NNNNN.webm`` (its index; an existing file is replaced) and ``BatchResult.path`` names it;
    without it ``BatchResult.video`` holds the frames. ``ray_address``: a running cluster
    (default: the one this process is connected to, else ``RAY_ADDRESS``, else a local cluster
    started for the batch and stopped after it).

    Every value is checked here, before anything is scheduled: a bad request raises
    ``ValueError``/``TypeError`` naming its index.
    """
    files, settings = _check_models(models)
    family = family_of_files(files)
    items = [_Item(i, _check_request(i, r, family, files, settings)) for i, r in enumerate(requests)]
    if not items:
        raise ValueError("requests is empty: a batch needs at least one request")
    resources = _check_resources(resources_per_worker)
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, minimum=1, maximum=100_000)
    folder = None if output_dir is None else _check_output_dir(output_dir)
    if ray_address is not None:
        if not isinstance(ray_address, str):
            raise TypeError(f"ray_address must be a string like 'ray://host:10001' or 'host:6379', got "
                            f"{type(ray_address).__name__}")
        ray = _ray()
        if ray.is_initialized():
            raise ValueError(f"ray_address={ray_address!r}: this process is already connected to a Ray cluster, "
                             "which the batch would use instead; pass ray_address=None, or ray.shutdown() first")
    return _run(items, files, settings, num_workers, resources, folder, ray_address)


def _check_models(models: Mapping[str, Any]) -> tuple[dict[str, str | None], dict[str, Any]]:
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping of WanPipeline's arguments, got {type(models).__name__}")
    unknown = [k for k in models if k not in MODEL_FILES + LOAD_SETTINGS]
    if unknown:
        raise TypeError(f"models: unknown key {unknown[0]!r}; the keys are the model files "
                        f"({', '.join(MODEL_FILES)}) and load settings ({', '.join(LOAD_SETTINGS)})")
    for needed in ("diffusion_model", "vae"):
        if models.get(needed) is None:
            raise ValueError(f"models needs {needed!r}")
    files = check_model_files(models["diffusion_model"], models["vae"], models.get("text_encoder"),
                              models.get("high_noise_diffusion_model"), models.get("clip_vision"),
                              models.get("tiny_vae"))
    settings = {k: v for k, v in models.items() if k in LOAD_SETTINGS}
    check_tiny_vae_use(settings.get("tiny_vae_use", "decode"))
    if settings.get("max_vram") is not None:  # the device is each worker's: only the budget itself here
        check_max_vram(settings["max_vram"], offload_to_cpu=bool(settings.get("offload_to_cpu")), is_cpu=False)
    if "device" in settings and not isinstance(settings["device"], int):
        raise TypeError("models['device'] must be a device index (each worker resolves it on its own machine)")
    return files, settings


def _check_request(index: int, request: GenerationRequest | Mapping[str, Any], family: Any,
                   files: Mapping[str, str | None], settings: Mapping[str, Any]) -> GenerationRequest:
    try:
        if isinstance(request, GenerationRequest):
            if request.family != family:
                raise ValueError(f"the request is for {request.family.name}; the models are {family.name}")
            return dataclasses.replace(request, loras=check_loras(request.loras, family, files))
        if not isinstance(request, Mapping):
            raise TypeError(f"expected a GenerationRequest or a mapping of a prompt and options, got "
                            f"{type(request).__name__}")
        options = dict(request)
        if "prompt" not in options:
            raise ValueError("no 'prompt'")
        prompt = options.pop("prompt")
        options.setdefault("vae_tiling", settings.get("vae_tiling", False))  # as WanPipeline.request does
        for name in ("loras", "tile_size"):  # JSON has lists where the options take tuples
            if isinstance(options.get(name), list):
                options[name] = tuple(tuple(v) if isinstance(v, list) else v for v in options[name]) \
                    if name == "loras" else tuple(options[name])
        if "preview" in options and options["preview"] is not None:
            raise ValueError("preview: a batch delivers no per-step callback, so it has no previews")
        return build_request(family, prompt, model_files=files, **options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"request {index}: {exc}") from exc


def _check_resources(resources: Mapping[str, float] | None) -> dict[str, float]:
    if resources is None:
        return {"GPU": 1.0}
    if not isinstance(resources, Mapping) or not resources:
        raise TypeError("resources_per_worker must be a non-empty mapping like {'GPU': 1} or {'CPU': 2}")
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                or not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"resources_per_worker[{name!r}] must be a positive number, got {amount!r}")
        if name.upper() in RESOURCE_NAMES and name not in RESOURCE_NAMES:
            raise ValueError(f"resources_per_worker: Ray's resource is {name.upper()!r}, not {name!r}")
        out[name] = float(amount)
    return out


def _check_output_dir(output_dir: str | os.PathLike[str]) -> str:
    # the first item's name stands for all: the same folder, names of the same length
    return os.path.dirname(check_output_path("output_dir", os.path.join(os.fspath(output_dir), _file_name(0))))


def _file_name(index: int) -> str:
    return f"{index:05d}.webm"


# --- the worker: a Ray actor holding one loaded pipeline ------------------------------
class GenerationWorker:
    """One loaded model set on one device, generating the batch's items one at a time.
    Ray runs it as an actor with two threads: ``cancel`` works while ``generate`` runs."""

    def __init__(self, name: str, files: Mapping[str, str | None], settings: Mapping[str, Any],
                 log_level: int, cpus: float) -> None:
        from wanpy.pipeline import WanPipeline

        logging.basicConfig(level=log_level, format=f"%(levelname)s {name}: %(message)s")
        self.name = name
        kwargs = {**files, **settings}
        if "n_threads" not in kwargs and cpus >= 1:
            kwargs["n_threads"] = int(cpus)  # the CPUs Ray gave this worker, not the whole machine's
        self.pipe: WanPipeline = WanPipeline(**kwargs, progress=False)
        self.steps_done = 0

    def describe(self) -> dict[str, Any]:
        pipe = self.pipe
        return {"name": self.name, "node": socket.gethostname(), "pid": os.getpid(), "device": pipe.device.name,
                "load_seconds": pipe.load_seconds}

    def generate(self, index: int, request: GenerationRequest, target: str | None) -> dict[str, Any]:
        """The item's outcome: "done", "refused" (the pre-flight says it does not fit this
        device), "cancelled" or "failed"; never raises for the item's own errors."""
        self.steps_done = 0
        logger.info("item %d: %s", index, request)
        try:
            video = self.pipe.generate_video(request, progress=False, callback=self._on_progress)
            if target is not None:
                _remove_stale_temps(target)  # a dead worker's unfinished write of the same item
                video.save(target)
        except AllocationTooLargeError as exc:
            return {"status": "refused", "error": str(exc)}
        except Cancelled as exc:
            return {"status": "cancelled", "error": str(exc), "steps_done": self.steps_done}
        except (WanpyError, ValueError, TypeError, OSError, MemoryError) as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        timings = video.timings
        return {"status": "done", "path": target, "video": None if target is not None else video,
                "seed": video.seed, "seconds": None if timings is None else timings.total}

    def _on_progress(self, progress: Progress) -> None:
        self.steps_done = progress.step
        logger.info("%s step %d/%d", progress.phase, progress.step, progress.steps)

    def cancel(self) -> None:
        self.pipe.cancel()


def _remove_stale_temps(target: str) -> None:
    """The hidden temporary files of ``target``'s atomic write (``wanpy.paths.temp_path_for``)
    that a killed worker left behind."""
    folder, base = os.path.split(target)
    pattern = temp_file_pattern(re.escape(base))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            try:
                os.remove(os.path.join(folder, name))
            except OSError as exc:
                logger.warning("could not remove %s, a dead worker's unfinished file: %s", name, exc)


# --- the driver's scheduler -------------------------------------------------------------
@dataclass
class _Item:
    index: int
    request: GenerationRequest
    attempts: int = 0
    deaths: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # worker -> its pre-flight's refusal
    dispatched: float | None = None


@dataclass
class _Worker:
    name: str
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("wanpy.distributed needs Ray: pip install \"wanpy[ray]\"") from exc
    return ray


def _run(items: list[_Item], files: dict[str, str | None], settings: dict[str, Any], num_workers: int | None,
         resources: dict[str, float], folder: str | None, ray_address: str | None) -> Iterator[BatchResult]:
    ray = _ray()

    started_ray = False
    if not ray.is_initialized():
        ray.init(address=ray_address, logging_level=logging.WARNING)
        started_ray = ray_address is None and not os.environ.get("RAY_ADDRESS")
    created: list[_Worker] = []  # filled as actors are created: all are killed however the batch ends
    try:
        workers = _start_workers(ray, files, settings, num_workers, resources, created)
        yield from _schedule(ray, items, workers, folder)
    finally:
        for w in created:
            try:
                ray.kill(w.actor, no_restart=True)
            except Exception as exc:  # already gone: nothing to stop
                logger.debug("ray.kill(%s): %s", w.name, exc)
        if started_ray:
            ray.shutdown()


def _capacity(ray: Any, resources: Mapping[str, float]) -> int:
    """How many workers the live nodes hold: a worker's resources come from one node."""
    return sum(min(int(node["Resources"].get(name, 0) // amount) for name, amount in resources.items())
               for node in ray.nodes() if node.get("Alive"))


def _start_workers(ray: Any, files: dict[str, str | None], settings: dict[str, Any], num_workers: int | None,
                   resources: dict[str, float], created: list[_Worker]) -> list[_Worker]:
    capacity = _capacity(ray, resources)
    wanted = capacity if num_workers is None else num_workers
    if capacity < 1 or wanted > capacity:
        have = {k: ray.cluster_resources().get(k, 0) for k in resources}
        raise ValueError(f"the Ray cluster's nodes hold {capacity} worker(s) of {resources} (it has {have}); asked "
                         f"{wanted if num_workers is not None else 'at least 1'}: pass resources_per_worker "
                         "the cluster has (e.g. {'CPU': 1} without GPUs) or fewer num_workers")
    options: dict[str, Any] = {"num_cpus": resources.get("CPU", 0), "num_gpus": resources.get("GPU", 0),
                               "max_concurrency": 2, "max_restarts": 0}
    custom = {k: v for k, v in resources.items() if k not in RESOURCE_NAMES}
    if custom:
        options["resources"] = custom
    actor_class = ray.remote(GenerationWorker)
    level = logging.getLogger("wanpy").getEffectiveLevel()
    batch = os.urandom(4).hex()
    for i in range(wanted):
        name = f"wanpy-worker-{batch}-{i}"
        actor = actor_class.options(name=name, **options).remote(name, files, settings, level, resources.get("CPU", 0))
        created.append(_Worker(name, actor))
    workers, errors = [], []
    started = {w.actor.describe.remote(): w for w in created}
    ready, late = ray.wait(list(started), num_returns=len(started), timeout=START_TIMEOUT_S)
    for ref in late:  # not placed (the cluster's free resources shrank) or not loaded in time
        errors.append(f"{started[ref].name}: not started and loaded in {START_TIMEOUT_S:.0f} s")
    for ref in ready:
        w = started[ref]
        try:
            w.info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            errors.append(f"{w.name}: {_reason(exc)}")
            continue
        logger.info("%s loaded on %s (%s) in %.1f s", w.name, w.info["device"], w.info["node"],
                    w.info["load_seconds"])
        workers.append(w)
    if not workers:
        raise LoadError(f"no worker could load the models: {'; '.join(errors)}", sdcpp_errors=tuple(errors))
    for e in errors:
        logger.warning("a worker did not start, the batch goes on without it: %s", e)
    return workers


def _reason(exc: BaseException) -> str:
    """A Ray error's cause in a line (its message holds the remote traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "died" in line or "killed" in line or "Error" in line),
                lines[0] if lines else type(exc).__name__)


def _schedule(ray: Any, items: list[_Item], workers: list[_Worker], folder: str | None) -> Iterator[BatchResult]:
    start = time.perf_counter()
    pending = collections.deque(items)
    idle = list(workers)
    running: dict[Any, tuple[_Worker, _Item]] = {}

    def result(item: _Item, status: Status, w: _Worker | None, **extra: Any) -> BatchResult:
        return BatchResult(index=item.index, status=status, request=item.request, worker=w.name if w else None,
                           node=w.info.get("node") if w else None, device=w.info.get("device") if w else None,
                           attempts=item.attempts, refused_by=tuple(item.refused),
                           load_seconds=w.info.get("load_seconds") if w else None,
                           queued_seconds=None if item.dispatched is None else item.dispatched - start, **extra)

    try:
        while pending or running:
            live = {w.name for w in idle} | {w.name for w, _ in running.values()}
            for item in [i for i in pending if live <= set(i.refused)]:  # fits no worker left
                pending.remove(item)
                yield result(item, "failed", None, error=_unfittable(item, live))
            for w in list(idle):
                chosen = next((i for i in pending if w.name not in i.refused), None)
                if chosen is None:
                    continue
                target = None if folder is None else os.path.join(folder, _file_name(chosen.index))
                running[w.actor.generate.remote(chosen.index, chosen.request, target)] = (w, chosen)
                pending.remove(chosen)  # only once it is running: an interrupt never loses it
                idle.remove(w)
                chosen.attempts += 1
                chosen.dispatched = time.perf_counter()
            if not running:
                continue  # what is pending fits no idle worker, and none is busy: reported above
            done, _ = ray.wait(list(running), num_returns=1)
            w, item = running[done[0]]
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # a bug, not the item's: the worker goes on
                del running[done[0]]
                idle.append(w)
                yield result(item, "failed", w, error=f"the worker raised {_reason(exc)}")
                continue
            except ray.exceptions.RayError as exc:  # its worker died: killed, out of memory, its node lost
                del running[done[0]]
                reason = _reason(exc)
                logger.warning("%s died running item %d: %s", w.name, item.index, reason)
                item.deaths.append(f"{w.name}: {reason}")
                if len(item.deaths) <= 1:
                    pending.appendleft(item)  # once more, on another worker
                else:
                    if folder is not None:
                        _remove_stale_temps(os.path.join(folder, _file_name(item.index)))
                    yield result(item, "failed", w, error="its worker died twice: " + "; ".join(item.deaths))
                continue
            del running[done[0]]
            idle.append(w)
            if outcome["status"] == "refused":
                item.refused[w.name] = outcome["error"]
                pending.appendleft(item)
                continue
            yield result(item, outcome["status"], w, **{k: v for k, v in outcome.items() if k != "status"})
    except KeyboardInterrupt:
        raise _interrupted(ray, running, pending, result) from None
    except GeneratorExit:  # the caller stopped iterating: stop the generations before the workers go
        if running:
            _interrupted(ray, running, pending, result)
        raise


def _unfittable(item: _Item, live: set[str]) -> str:
    if not live:
        return "no worker is left (each died): " + "; ".join(item.deaths)
    first = next(iter(item.refused.values()))
    return f"it fits no worker: the pre-flight of {', '.join(sorted(item.refused))} refused it: {first}"


def _interrupted(ray: Any, running: dict[Any, tuple[_Worker, _Item]], pending: Iterable[_Item],
                 result: Any) -> BatchInterrupted:
    """Ctrl-C: cancel every running generation (it stops at its next step) and wait for them."""
    logger.warning("interrupted: cancelling %d running generation(s)", len(running))
    for w, _ in running.values():
        w.actor.cancel.remote()
    out: list[BatchResult] = []
    done, _ = ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_SECONDS)
    for ref in running:
        w, item = running[ref]
        try:
            outcome = ray.get(ref) if ref in done else {"status": "cancelled", "error": "did not stop in time"}
        except ray.exceptions.RayError as exc:
            outcome = {"status": "failed", "error": f"its worker died while stopping: {_reason(exc)}"}
        if outcome["status"] == "refused":
            outcome = {"status": "cancelled", "error": "not started: the batch was interrupted"}
        elif outcome["status"] == "cancelled" and "steps_done" in outcome:
            outcome["error"] = f"stopped after {outcome['steps_done']} step(s): the batch was interrupted"
        out.append(result(item, outcome.pop("status"), w, **outcome))
    out += [result(i, "cancelled", None, error="not started: the batch was interrupted") for i in pending]
    out.sort(key=lambda r: r.index)
    stopped = sum(r.status == "cancelled" for r in out)
    return BatchInterrupted(f"the batch was interrupted (Ctrl-C): {stopped} item(s) cancelled", results=tuple(out))
