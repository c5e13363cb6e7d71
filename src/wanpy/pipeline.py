"""``WanPipeline``: Wan models loaded once, generating many videos.

Every value is validated into a ``GenerationRequest`` before any native call; one generation
runs at a time per process (sd.cpp's callbacks and buffers are process-global), others wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from wanpy import _core, _logging
from wanpy.errors import Cancelled, GenerationError, LoadError
from wanpy.memory import FitChoice, Preflight, choose_fit, refusal
from wanpy.memory import preflight as run_preflight
from wanpy.model_set import PathArg, check_model_files, family_of_files
from wanpy.native_lock import native
from wanpy.progress import GenerationMonitor, LoadingBar, Progress
from wanpy.request import GenerationRequest, RequestOptions, build_request, check_loras, check_options
from wanpy.system import Device, backend_warnings, devices, resolve_device
from wanpy.units import format_bytes
from wanpy.validation import check_bool, check_int, check_max_vram, check_parse_stack, check_tiny_vae_use
from wanpy.video import Video

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("wanpy")

__all__ = ["BackendFallbackWarning", "WanPipeline"]

# settings fixed when the weights load, which fit="auto" may change (then the weights reload)
LOAD_SETTINGS = ("flash_attention", "keep_vae_on_cpu", "offload_to_cpu", "max_vram")


class BackendFallbackWarning(RuntimeWarning):
    """A GPU build found no GPU: this pipeline would run on the CPU."""


class WanPipeline:
    """Wan2.1 / Wan2.2 models loaded once, generating many videos.

    Args:
        diffusion_model: the Wan DiT (GGUF or safetensors). For Wan2.2 A14B, the
            low-noise expert.
        vae: the Wan VAE (2.1 for all but TI2V-5B, which takes the 2.2 VAE).
        text_encoder: umt5-xxl; None runs the DiT with an empty (zero) text context.
        high_noise_diffusion_model: Wan2.2 A14B's high-noise expert.
        clip_vision: CLIP ViT-H, for Wan2.1 I2V / FLF2V.
        flash_attention: use ggml's flash attention (less memory for attention).
        vae_tiling: decode the VAE in spatial tiles (bounded memory); the default of every
            request this pipeline builds.
        offload_to_cpu: keep weights in RAM and move them to the device when used.
        keep_vae_on_cpu: run the VAE on the CPU.
        mmap: sd.cpp reads the weight files through mmap (``enable_mmap``) instead of read().
        vae_conv_direct: the VAE's 2-D convolutions run as ggml's direct convolution instead of
            im2col + matrix multiply (same pixels; on the CPU no faster and a slightly larger
            decode buffer: BENCHMARKS.md). The pre-flight measures the VAE's graphs with it.
        diffusion_conv_direct: sd.cpp's direct convolutions in the diffusion model; it applies
            them to UNet models only (Wan's DiT has no 2-D convolution), so True is refused.
        tiny_vae: a TAEHV file (the tiny video autoencoder, madebyollin/taehv's ``taew2_1`` for
            the Wan2.1 VAE's latents, ``taew2_2`` for Wan2.2 TI2V-5B's): it encodes and decodes
            instead of the VAE (far less memory and time; the VAE's weights are then not loaded).
        tiny_vae_use: "decode" (the default, as above) or "preview": the VAE decodes the video and
            the tiny VAE only the previews (``preview="tae"``).
        max_vram: a device-memory budget (bytes, or "6GiB") for the diffusion model, the text
            encoder and CLIP vision: sd.cpp cuts their graphs into segments of at most this size and
            streams each segment's weights from RAM (needs ``offload_to_cpu=True`` and a GPU). The
            pre-flight predicts the segments with sd.cpp's own planner and refuses a budget below the
            largest one; the VAE is not segmented (tile it). Slower: every step streams the weights.
        n_threads: CPU threads (default: physical cores).
        device: a ``wanpy.Device`` or its index (default: the first GPU, else the CPU).
        preflight: check that the weights fit the device before loading them.
        progress: a "loading" bar while the weights load (generations have their own flag).
    """

    _free_params_immediately = False  # True for the one-shot function's pipeline

    def __init__(self, diffusion_model: PathArg, vae: PathArg, text_encoder: PathArg | None = None,
                 high_noise_diffusion_model: PathArg | None = None, clip_vision: PathArg | None = None, *,
                 flash_attention: bool = False, vae_tiling: bool = False, offload_to_cpu: bool = False,
                 keep_vae_on_cpu: bool = False, n_threads: int | None = None, device: Device | int | None = None,
                 preflight: bool = True, progress: bool = True, mmap: bool = False, vae_conv_direct: bool = False,
                 diffusion_conv_direct: bool = False, tiny_vae: PathArg | None = None,
                 tiny_vae_use: str = "decode", max_vram: int | str | None = None) -> None:
        self._ctx: _core.Context | None = None
        self._stops: set[threading.Event] = set()  # one per generation running or waiting: cancel() sets them
        self._stops_lock = threading.Lock()
        self.files = check_model_files(diffusion_model, vae, text_encoder, high_noise_diffusion_model, clip_vision,
                                       tiny_vae)
        self.tiny_vae_use = check_tiny_vae_use(tiny_vae_use)
        if self.tiny_vae_use == "preview" and self.files["tiny_vae"] is None:
            raise ValueError("tiny_vae_use='preview' needs tiny_vae=PATH (a TAEHV file) to decode the previews with")
        self.flash_attention = check_bool("flash_attention", flash_attention)
        self.vae_tiling = check_bool("vae_tiling", vae_tiling)
        self.offload_to_cpu = check_bool("offload_to_cpu", offload_to_cpu)
        self.keep_vae_on_cpu = check_bool("keep_vae_on_cpu", keep_vae_on_cpu)
        self.mmap = check_bool("mmap", mmap)
        self.vae_conv_direct = check_bool("vae_conv_direct", vae_conv_direct)
        check_diffusion_conv_direct(diffusion_conv_direct)
        self.preflight = check_bool("preflight", preflight)
        self._loading_bar = check_bool("progress", progress)
        self.family = family_of_files(self.files)
        self.n_threads = _core.num_physical_cores() if n_threads is None else check_int(
            "n_threads", n_threads, minimum=1, maximum=1024)
        devs = devices()  # on Vulkan each enumeration creates an instance: once per pipeline
        self.device = resolve_device(device, devs)
        self.max_vram = check_max_vram(max_vram, offload_to_cpu=self.offload_to_cpu,
                                       is_cpu=self.device.type == "cpu")
        for message in backend_warnings(_core.BACKEND, devs):
            warnings.warn(message, BackendFallbackWarning, stacklevel=2)
        if self.preflight or self.max_vram is not None:
            # one weights-only pre-flight: weights that cannot be allocated are refused before any is
            # read (sd.cpp ignores a failed weight allocation and then writes into unallocated memory),
            # and with max_vram it plans the graphs that do not depend on the request
            d = self.family.defaults
            report = run_preflight(width=d.width, height=d.height, num_frames=1, weights_only=True,
                                   init_image=self.max_vram is not None and self.family.needs_clip_vision,
                                   **self.measure_args())
            self._check_budget_floor(report)
            if self.preflight and not report.fits:
                raise refusal(report)
        self._load_timed()

    def _check_budget_floor(self, report: Preflight) -> None:
        """max_vram below the text encoder's or CLIP vision's largest segment (graphs that do not depend on
        the request) is refused here, pre-flight or not: sd.cpp aborts the process when their compute
        fails (GGML_ASSERT), where the diffusion model's fails cleanly (patch 0008)."""
        floor = report.max_vram_floor
        if self.max_vram is not None and floor is not None and floor > self.max_vram:
            raise ValueError(f"max_vram={format_bytes(self.max_vram)} is below what the "
                             f"{report.params.get('max_vram_floor_component', 'text encoder')}'s largest graph "
                             f"segment needs: {format_bytes(floor)} ({floor:,} B); sd.cpp would abort the process "
                             f"on it. Give at least {-(-floor // 2**20)}MiB")

    # --- requests and the pre-flight -----------------------------------------------
    def request(self, prompt: str, **options: Unpack[RequestOptions]) -> GenerationRequest:
        """This pipeline's ``GenerationRequest`` for ``prompt`` (its family, its vae_tiling as the
        default, LoRAs checked against its files); nothing is generated."""
        check_options(options, "generate_video")
        options.setdefault("vae_tiling", self.vae_tiling)
        return build_request(self.family, prompt, model_files=self.files, **options)

    def measure_args(self) -> dict[str, Any]:
        """What the pre-flight needs of this pipeline: its files, memory settings and device."""
        f = self.files
        return {"model": f["diffusion_model"], "vae": f["vae"], "text_encoder": f["text_encoder"],
                "high_noise_diffusion_model": f["high_noise_diffusion_model"], "clip_vision": f["clip_vision"],
                "flash_attention": self.flash_attention, "offload_to_cpu": self.offload_to_cpu,
                "keep_vae_on_cpu": self.keep_vae_on_cpu, "device": self.device,
                "vae_conv_direct": self.vae_conv_direct, "tiny_vae": f["tiny_vae"], "tiny_vae_use": self.tiny_vae_use,
                "max_vram": self.max_vram}

    def check_fits(self, request: GenerationRequest) -> Preflight:
        """``request``'s pre-flight on this pipeline's device, without generating (a service refusing
        at submission what would fail later): raises ``wanpy.AllocationTooLargeError`` when it does
        not fit, or, with ``fit="auto"``, when no setting fits. Returns the report (``fit="auto"``:
        of the settings it would choose)."""
        request = self._own_request(request, {})
        if request.fit == "auto":
            return self.choose_fit(request).report
        return self._check_fits(request.width, request.height, request.num_frames, request=request)

    def choose_fit(self, request: GenerationRequest) -> FitChoice:
        """What ``fit="auto"`` would choose for ``request`` on this pipeline (``wanpy.choose_fit``);
        nothing reloads. Raises ``wanpy.AllocationTooLargeError`` when no setting fits."""
        return choose_fit(width=request.width, height=request.height, num_frames=request.num_frames,
                          **request_memory(request), **self.measure_args())

    def _check_fits(self, width: int, height: int, num_frames: int, *, weights_only: bool = False,
                    request: GenerationRequest | None = None) -> Preflight:
        report = run_preflight(width=width, height=height, num_frames=num_frames, weights_only=weights_only,
                               **request_memory(request), **self.measure_args())
        if not report.fits:
            raise refusal(report)
        logger.debug("pre-flight: fits; largest %s, peak %d B (%.0f ms)", report.largest, report.peak,
                     report.seconds * 1000)
        return report

    def _fit(self, request: GenerationRequest) -> tuple[GenerationRequest, FitChoice]:
        """fit="auto": the cheapest settings that fit; reloads when a load-time setting changes."""
        choice = self.choose_fit(request)
        at_load = {k: v for k, (_, v) in choice.changed.items() if k in LOAD_SETTINGS}
        if at_load:
            logger.warning("fit='auto': reloading %s with %s", self.family.name,
                           ", ".join(f"{k}={v}" for k, v in at_load.items()))
            self.close()
            for k, v in at_load.items():
                setattr(self, k, v)
            self._load_timed()
        chosen = dataclasses.replace(request, vae_tiling=choice.settings["vae_tiling"],
                                     tile_size=choice.settings["tile_size"])
        return chosen, choice

    # --- loading -------------------------------------------------------------------
    @contextmanager
    def _device_selected(self) -> Iterator[None]:
        """sd.cpp picks its Vulkan device from SD_VK_DEVICE when it loads."""
        if self.device.backend.lower() != "vulkan":
            yield
            return
        old = os.environ.get("SD_VK_DEVICE")
        os.environ["SD_VK_DEVICE"] = self.device.name.removeprefix("Vulkan")
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("SD_VK_DEVICE", None)
            else:
                os.environ["SD_VK_DEVICE"] = old

    def _load_timed(self) -> None:
        start = time.perf_counter()
        # sd.cpp computes the DiT's feed-forward block in token chunks above the device's
        # per-allocation ceiling (patch 0007), as the pre-flight measures with the same ceiling
        _core.set_tensor_ceiling(self.device.name, self.device.max_allocation or 0)
        with native(), self._device_selected():
            self._ctx = self._load()
        self.load_seconds = time.perf_counter() - start
        logger.info("loaded %s in %.1f s on %s", self.family.name, self.load_seconds, self.device.name)

    def _load(self) -> _core.Context:
        f = self.files
        said: list[str] = []  # sd.cpp's errors while loading: the LoadError's reason

        def on_log(source: str, level: str, text: str) -> None:
            if level == "error" and not _logging.recovered(text) and len(said) < 20:
                said.append(text)

        bar = LoadingBar(self._loading_bar)
        try:
            with _logging.observe(on_log):
                return _core.Context(
                    diffusion_model=f["diffusion_model"], high_noise_diffusion_model=f["high_noise_diffusion_model"],
                    vae=f["vae"], t5xxl=f["text_encoder"], clip_vision=f["clip_vision"], tiny_vae=f["tiny_vae"],
                    tiny_vae_preview_only=self.tiny_vae_use == "preview",
                    max_vram_gib=0.0 if self.max_vram is None else self.max_vram / 2**30, n_threads=self.n_threads,
                    # text-to-video never VAE-encodes: its VAE (and tiny VAE) load without the encoder
                    vae_decode_only=not self.family.dit.uses_vae_encoder,
                    flash_attention=self.flash_attention, offload_params_to_cpu=self.offload_to_cpu,
                    keep_vae_on_cpu=self.keep_vae_on_cpu, keep_clip_on_cpu=False, enable_mmap=self.mmap,
                    free_params_immediately=self._free_params_immediately, vae_conv_direct=self.vae_conv_direct,
                    progress=bar.on_progress)
        except KeyboardInterrupt as exc:
            raise Cancelled("loading was interrupted (Ctrl-C); nothing stays loaded") from exc
        except _core.NativeError as exc:
            reason = f": sd.cpp said: {'; '.join(said)}" if said else " (sd.cpp logged no error line)"
            raise LoadError(f"{exc}{reason}", sdcpp_errors=tuple(said)) from exc
        finally:
            bar.close()

    # --- lifecycle ----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._ctx is None

    def close(self) -> None:
        """Free the weights. Idempotent; the pipeline cannot generate afterwards."""
        if self._ctx is None:
            return
        with native():  # raises, leaving the pipeline open, when called from its own callback
            ctx, self._ctx = self._ctx, None
            ctx.close()

    def __enter__(self) -> WanPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.close()

    # --- generation ---------------------------------------------------------------
    def generate_video(self, prompt: str | GenerationRequest, *, progress: bool = True,
                       callback: Callable[[Progress], Any] | None = None,
                       **options: Unpack[RequestOptions]) -> Video:
        """Generate a video; returns frames uint8 (T, H, W, 3) with the request that shaped them.

        ``prompt`` is the text, or a ``GenerationRequest`` (``pipe.request(...)``,
        ``wanpy.build_request(...)``) for this pipeline's family; the options are those of
        ``wanpy.RequestOptions`` (None: the family's published default, e.g. Wan2.1 T2V 1.3B:
        832x480, 81 frames, 16 fps, 50 steps, cfg 5.0, flow shift 5.0). Every value is
        checked before anything runs. ``preflight=True`` (default) first predicts every
        allocation and raises ``wanpy.AllocationTooLargeError`` when one exceeds the
        device's per-allocation ceiling or a phase its memory; ``fit="auto"`` instead
        chooses the cheapest settings that fit (``wanpy.choose_fit``; a setting fixed at
        load reloads the weights with it) and records them in ``video.params["fit"]``.
        ``callback(progress)`` is called per step; returning False (or a numpy False),
        raising or Ctrl-C stop the generation with ``wanpy.Cancelled`` (the pipeline stays
        usable).
        """
        request, bars = self._checked_call(prompt, progress, callback, options)
        with self._stop_event() as stop:
            return self._generate(request, bars, callback, stop)

    async def generate_video_async(self, prompt: str | GenerationRequest, *, progress: bool = False,
                                   callback: Callable[[Progress], Any] | None = None,
                                   **options: Unpack[RequestOptions]) -> Video:
        """``generate_video`` in a worker thread, for asyncio: the event loop keeps running, and
        cancelling the awaiting task stops the native run at its next step (the task's
        ``CancelledError`` is raised once sd.cpp has returned, so the next generation can start).
        Values are checked before anything runs, on the calling thread."""
        request, bars = self._checked_call(prompt, progress, callback, options)
        with self._stop_event() as stop:
            import asyncio  # only this method needs it: not imported by `import wanpy`

            work = asyncio.get_running_loop().run_in_executor(None, self._generate, request, bars, callback, stop)
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()
                with contextlib.suppress(Exception):
                    await work  # sd.cpp stops at its next step; the lock is free again after
                raise

    def _checked_call(self, prompt: str | GenerationRequest, progress: Any, callback: Any,
                      options: Mapping[str, Any]) -> tuple[GenerationRequest, bool]:
        """A generation's request and bar flag, every value checked before anything runs."""
        if self._ctx is None:
            raise GenerationError("this pipeline is closed")
        bars = check_bool("progress", progress)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        request = self._own_request(prompt, options)
        check_previews(request, callback, tiny_vae=self.files["tiny_vae"])
        return request, bars

    def cancel(self) -> None:
        """Stop every generation of this pipeline that is running or waiting to run, at its next
        step (as Ctrl-C does): each raises ``wanpy.Cancelled``; the pipeline stays usable.
        Safe from any thread, a callback included; generations started afterwards run."""
        with self._stops_lock:
            for stop in self._stops:
                stop.set()

    @contextmanager
    def _stop_event(self) -> Iterator[threading.Event]:
        stop = threading.Event()
        with self._stops_lock:
            self._stops.add(stop)
        try:
            yield stop
        finally:
            with self._stops_lock:
                self._stops.discard(stop)

    def _generate(self, request: GenerationRequest, bars: bool, callback: Callable[[Progress], Any] | None,
                  stop: threading.Event) -> Video:
        t_start = time.perf_counter()
        check_parse_stack(request.prompt, request.negative_prompt)  # on the thread that generates
        record: dict[str, Any] = {"fit": request.fit}
        if request.fit == "auto":
            request, choice = self._fit(request)
            record["fit"] = choice.as_params()
            report = choice.report
        if request.preflight:
            if request.fit == "strict":
                report = self._check_fits(request.width, request.height, request.num_frames, request=request)
            record["preflight"] = {"fits": True, "largest": report.largest.name,
                                   "largest_bytes": report.largest.nbytes, "peak_bytes": report.peak,
                                   "max_allocation": report.max_allocation, "total_memory": report.total_memory}
        else:
            record["preflight"] = "skipped (preflight=False)"
        if request.seed is None:
            request = dataclasses.replace(request, seed=secrets.randbelow(2**31))
        monitor = GenerationMonitor(first_phase="high_noise_sampling" if request.high_noise else "sampling",
                                    callback=callback, bars=bars, stop=stop)
        frames = self._run(request, monitor, stop)
        if request.high_noise is not None:
            record["high_noise_steps_run"] = monitor.steps_seen.get("high_noise_sampling", 0)
        counts = monitor.evaluations
        record["evaluations"] = {phase: {"computed": c, "cached": k} for phase, (c, k) in counts.items()}
        video = Video(frames=frames, fps=request.fps, seed=request.seed, params=self._params(request, record),
                      request=request, model_evaluations=sum(c for c, _ in counts.values()) if counts else None,
                      cached_evaluations=sum(k for _, k in counts.values()) if counts else None)
        if request.interpolate is not None:
            video = video.interpolate(request.interpolate)
        return dataclasses.replace(video, timings=monitor.result(load=None, total=time.perf_counter() - t_start))

    def _own_request(self, prompt: str | GenerationRequest, options: Mapping[str, Any]) -> GenerationRequest:
        if not isinstance(prompt, GenerationRequest):
            return self.request(prompt, **options)
        if options:
            raise TypeError(f"pass a GenerationRequest or options, not both (got {', '.join(options)})")
        if prompt.family != self.family:
            raise ValueError(f"the request is for {prompt.family.name}; this pipeline runs {self.family.name}")
        # a request built without model files: its LoRAs are checked against this pipeline's
        return dataclasses.replace(prompt, loras=check_loras(prompt.loras, self.family, self.files))

    def _params(self, request: GenerationRequest, record: dict[str, Any]) -> dict[str, Any]:
        """``Video.params``: the request's record and what this run decided."""
        return {**request.to_dict(), **record, "flash_attention": self.flash_attention,
                "offload_to_cpu": self.offload_to_cpu, "keep_vae_on_cpu": self.keep_vae_on_cpu,
                "mmap": self.mmap, "vae_conv_direct": self.vae_conv_direct, "n_threads": self.n_threads,
                "tiny_vae_use": None if self.files["tiny_vae"] is None else self.tiny_vae_use,
                "max_vram": self.max_vram,
                "device": self.device.name, "backend": _core.BACKEND,
                "model_files": dict(self.files)}

    def _run(self, request: GenerationRequest, monitor: GenerationMonitor, stop: threading.Event) -> Any:
        """One native generation; the frames checked against the request."""
        r, hn = request, request.high_noise
        assert r.seed is not None  # drawn by generate_video
        tile_x, tile_y = r.tile_size or (0, 0)

        def on_log(source: str, level: str, text: str) -> None:
            monitor.on_log(text)

        with native():
            if self._ctx is None:
                raise GenerationError("this pipeline was closed while waiting to generate")
            if stop.is_set():
                raise Cancelled("generation cancelled (pipe.cancel()) before it started")
            try:
                with _logging.observe(on_log):
                    frames = self._ctx.generate(
                        prompt=r.prompt, negative_prompt=r.negative_prompt, width=r.width, height=r.height,
                        num_frames=r.num_frames, steps=r.steps, cfg_scale=r.cfg_scale, flow_shift=r.flow_shift,
                        sample_method=r.sample_method, scheduler=r.scheduler, seed=r.seed, strength=1.0,
                        init_image=r.init_image if r.reference_image is None else r.reference_image,
                        end_image=r.end_image, control_frames=r.control_video,
                        vace_strength=1.0 if r.vace_strength is None else r.vace_strength,
                        high_noise_steps=0 if hn is None else -1 if hn.steps is None else hn.steps,
                        high_noise_cfg_scale=r.cfg_scale if hn is None else hn.cfg_scale,
                        high_noise_sample_method=r.sample_method if hn is None else hn.sample_method,
                        high_noise_scheduler=r.scheduler if hn is None else hn.scheduler,
                        moe_boundary=r.family.defaults.moe_boundary if hn is None else hn.moe_boundary,
                        loras=[(lora.path, lora.multiplier, lora.high_noise) for lora in r.loras],
                        vae_tiling=r.vae_tiling, tile_size_x=tile_x, tile_size_y=tile_y,
                        tile_overlap=r.tile_overlap, progress=monitor.on_progress,
                        preview=None if r.preview is None else monitor.on_preview, preview_mode=r.preview or "proj",
                        preview_every=r.preview_every, preview_noisy=r.preview_noisy,
                        cache=None if r.cache is None else r.cache.to_native())
            except KeyboardInterrupt as exc:
                raise Cancelled("generation interrupted (Ctrl-C)") from exc
            except _core.Cancelled as exc:
                if stop.is_set():
                    raise Cancelled("generation cancelled (pipe.cancel() or its asyncio task)") from exc
                raise Cancelled("generation cancelled by the callback") from exc
            except _core.NativeError as exc:
                raise GenerationError(str(exc)) from exc
            finally:
                monitor.close()
        # the post-condition the users' 1-frame WebMs lacked
        if frames.shape != (r.num_frames, r.height, r.width, 3):
            raise GenerationError(f"sd.cpp returned {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, "
                                  f"asked {r.num_frames} frames of {r.width}x{r.height}: refusing to return a wrong "
                                  "video")
        return frames

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"loaded on {self.device.name}"
        return f"<WanPipeline {self.family.name} {state}>"


def check_diffusion_conv_direct(value: Any) -> None:
    """sd.cpp applies diffusion_conv_direct to UNet models only: for Wan it would change nothing."""
    if check_bool("diffusion_conv_direct", value):
        raise ValueError("diffusion_conv_direct=True: sd.cpp 0.4.7 applies direct convolutions to UNet diffusion "
                         "models only (Wan's DiT has no 2-D convolution), so it would change nothing; "
                         "vae_conv_direct=True applies them to the Wan VAE")


def check_previews(request: GenerationRequest, callback: Any, *, tiny_vae: str | None) -> None:
    if request.preview is not None and callback is None:
        raise ValueError(f"preview={request.preview!r} delivers frames to callback= (Progress.preview): pass one")
    if request.preview == "tae" and tiny_vae is None:
        raise ValueError("preview='tae' decodes with the pipeline's tiny VAE: load one (tiny_vae=PATH, a TAEHV file), "
                         "or use preview='vae' or 'proj'")
    if request.preview == "vae" and tiny_vae is not None:
        raise ValueError("preview='vae': with a tiny VAE loaded sd.cpp decodes every preview with it, not with the "
                         "VAE: ask for preview='tae'")


def request_memory(request: GenerationRequest | None) -> dict[str, Any]:
    """What a request changes in the pre-flight: images in (a VACE reference image reaches sd.cpp as
    its init image), VAE tiling and its tiles, previews, and what a step cache keeps (its cfg: one
    evaluation a step or two)."""
    if request is None:
        return {}
    return {"init_image": request.init_image is not None or request.reference_image is not None, "end_image": request.end_image is not None,
            "vae_tiling": request.vae_tiling, "tile_size": request.tile_size, "tile_overlap": request.tile_overlap,
            "preview": request.preview, "cache": request.cache, "cfg_scale": request.cfg_scale,
            "high_noise_cfg_scale": None if request.high_noise is None else request.high_noise.cfg_scale}
