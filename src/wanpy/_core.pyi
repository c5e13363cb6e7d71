# Generated from the compiled wanpy._core by scripts/check_stubs.py --write: do not edit.
"""
wanpy's native core: stable-diffusion.cpp and ggml, statically linked
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['BACKEND', 'CacheParams', 'Cancelled', 'Context', 'MeasureSession', 'NativeError', 'PROMPT_STACK_PER_BYTE', 'SDCPP_SOURCE', 'backend_devices', 'convert_tensor_names', 'env_vars_read', 'num_physical_cores', 'sample_methods', 'schedulers', 'sdcpp_system_info', 'sdcpp_version', 'set_log_sink', 'set_tensor_ceiling', 'tensor_ceiling', 'thread_stack_left', 'vulkan_device_limits']
class NativeError(RuntimeError):
    pass
class Cancelled(RuntimeError):
    pass
class Context:
    """
    Loaded model files (sd.cpp's sd_ctx_t).
    """
    def __init__(self, *, diffusion_model: str | None = None, high_noise_diffusion_model: str | None = None, vae: str | None = None, t5xxl: str | None = None, clip_vision: str | None = None, tiny_vae: str | None = None, tiny_vae_preview_only: bool = False, max_vram_gib: typing.SupportsFloat | typing.SupportsIndex = 0.0, n_threads: typing.SupportsInt | typing.SupportsIndex, vae_decode_only: bool = False, flash_attention: bool = False, offload_params_to_cpu: bool = False, keep_vae_on_cpu: bool = False, keep_clip_on_cpu: bool = False, enable_mmap: bool = False, free_params_immediately: bool = False, vae_conv_direct: bool = False, progress: collections.abc.Callable[[int, int, float], typing.Any] | None = None) -> None:
        """
        Load the models (the GIL released meanwhile). free_params_immediately: sd.cpp frees each model's weights as soon as the generation is done with it (the text encoder after encoding, the DiT after sampling, the VAE after decoding), like sd-cli; the context can then generate once. enable_mmap: sd.cpp reads the weight files through mmap. vae_conv_direct: the VAE's 2-D convolutions run as ggml_conv_2d_direct instead of im2col + matmul. tiny_vae: a TAEHV file (taesd_path) that encodes and decodes instead of the VAE, or, with tiny_vae_preview_only, only decodes the previews. max_vram_gib: sd.cpp's max_vram (graph-cut segments of at most this many GiB, weights streamed from RAM; with offload_params_to_cpu on a GPU).
        """
    def close(self) -> None:
        """
        Free the loaded weights (after a generation running in another thread). Idempotent.
        """
    def generate(self, *, prompt: str, negative_prompt: str, width: typing.SupportsInt | typing.SupportsIndex, height: typing.SupportsInt | typing.SupportsIndex, num_frames: typing.SupportsInt | typing.SupportsIndex, steps: typing.SupportsInt | typing.SupportsIndex, cfg_scale: typing.SupportsFloat | typing.SupportsIndex, flow_shift: typing.SupportsFloat | typing.SupportsIndex, sample_method: str, scheduler: str, seed: typing.SupportsInt | typing.SupportsIndex, strength: typing.SupportsFloat | typing.SupportsIndex, init_image: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8] | None = None, end_image: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8] | None = None, high_noise_steps: typing.SupportsInt | typing.SupportsIndex, high_noise_cfg_scale: typing.SupportsFloat | typing.SupportsIndex, high_noise_sample_method: str, high_noise_scheduler: str, moe_boundary: typing.SupportsFloat | typing.SupportsIndex, loras: collections.abc.Sequence[tuple[str, typing.SupportsFloat | typing.SupportsIndex, bool]], vae_tiling: bool, tile_size_x: typing.SupportsInt | typing.SupportsIndex, tile_size_y: typing.SupportsInt | typing.SupportsIndex, tile_overlap: typing.SupportsFloat | typing.SupportsIndex, progress: collections.abc.Callable[[int, int, float], typing.Any] | None = None, preview: collections.abc.Callable[[int, numpy.typing.NDArray[numpy.uint8], bool], typing.Any] | None = None, preview_mode: str = 'proj', preview_every: typing.SupportsInt | typing.SupportsIndex = 1, preview_noisy: bool = False, cache: CacheParams | None = None, control_frames: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8] | None = None, vace_strength: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> numpy.typing.NDArray[numpy.uint8]:
        """
        Run sd.cpp's generate_video (the GIL released meanwhile); returns frames as uint8 (T, H, W, 3). loras: (path, multiplier, is_high_noise). preview(step, frames, is_noisy) receives sd.cpp's previews (preview_mode proj, tae or vae) every preview_every steps, of the denoised latents (or, with preview_noisy, the noisy ones). cache: sd.cpp's step cache for both experts. control_frames (T, H, W, 3) uint8 and vace_strength: a VACE DiT's control video (init_image is then its reference image). Raises Cancelled when progress returned False or raised, NativeError when sd.cpp failed or the context is closed.
        """
class CacheParams:
    """
    sd.cpp's sd_cache_params_t (step caching), initialised by sd_cache_params_init; the fields keep the engine's names. scm_mask is not bound (no Wan path reads it).
    """
    reset_error_on_compute: bool
    scm_policy_dynamic: bool
    use_relative_threshold: bool
    def __init__(self) -> None:
        ...
    @property
    def Bn_compute_blocks(self) -> int:
        ...
    @Bn_compute_blocks.setter
    def Bn_compute_blocks(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def Fn_compute_blocks(self) -> int:
        ...
    @Fn_compute_blocks.setter
    def Fn_compute_blocks(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def end_percent(self) -> float:
        ...
    @end_percent.setter
    def end_percent(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def error_decay_rate(self) -> float:
        ...
    @error_decay_rate.setter
    def error_decay_rate(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def max_cached_steps(self) -> int:
        ...
    @max_cached_steps.setter
    def max_cached_steps(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_continuous_cached_steps(self) -> int:
        ...
    @max_continuous_cached_steps.setter
    def max_continuous_cached_steps(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_warmup_steps(self) -> int:
        ...
    @max_warmup_steps.setter
    def max_warmup_steps(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def mode(self) -> str:
        """
        disabled, easycache, ucache, dbcache, taylorseer, cache-dit or spectrum
        """
    @mode.setter
    def mode(self, arg1: str) -> None:
        ...
    @property
    def residual_diff_threshold(self) -> float:
        ...
    @residual_diff_threshold.setter
    def residual_diff_threshold(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def reuse_threshold(self) -> float:
        ...
    @reuse_threshold.setter
    def reuse_threshold(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_flex_window(self) -> float:
        ...
    @spectrum_flex_window.setter
    def spectrum_flex_window(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_lam(self) -> float:
        ...
    @spectrum_lam.setter
    def spectrum_lam(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_m(self) -> int:
        ...
    @spectrum_m.setter
    def spectrum_m(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_stop_percent(self) -> float:
        ...
    @spectrum_stop_percent.setter
    def spectrum_stop_percent(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_w(self) -> float:
        ...
    @spectrum_w.setter
    def spectrum_w(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_warmup_steps(self) -> int:
        ...
    @spectrum_warmup_steps.setter
    def spectrum_warmup_steps(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def spectrum_window_size(self) -> int:
        ...
    @spectrum_window_size.setter
    def spectrum_window_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def start_percent(self) -> float:
        ...
    @start_percent.setter
    def start_percent(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def taylorseer_n_derivatives(self) -> int:
        ...
    @taylorseer_n_derivatives.setter
    def taylorseer_n_derivatives(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def taylorseer_skip_interval(self) -> int:
        ...
    @taylorseer_skip_interval.setter
    def taylorseer_skip_interval(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class MeasureSession:
    """
    Weightless sd.cpp runners over model headers (or preset tensors), for the pre-flight. Every method runs without the GIL, one measurement at a time in the process; each measurement is a dict: total, largest, name, op, shape, type.
    """
    def __init__(self, files: collections.abc.Sequence[tuple[str, str]], tensors: collections.abc.Sequence[tuple[str, typing.SupportsInt | typing.SupportsIndex, collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]]]) -> None:
        """
        Read the files' headers (path, loader prefix) with sd.cpp.
        """
    def clip_vision_graph(self, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        ...
    def clip_vision_plan(self, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, budget: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        """
        sd.cpp's max_vram plan of clip_vision_graph's graph for a budget in bytes (> 0). The dict: segmented (whether sd.cpp runs it segment by segment; False: its ordinary path, all weights on the device and one compute buffer, measured after planning), segments (after the budget merge; 1 when not segmented), base_segments, smallest_budget (the largest need sd.cpp plans for one base segment: the smallest budget no segment exceeds), device_peak (the most a segment holds on the device at once: params, compute, cache in and out; or weights + compute), largest_params, largest_compute, largest_cache (single buffers), largest_tensor (bytes), largest_tensor_name, largest_tensor_shape, largest_tensor_type, per_segment (dicts: name, params, compute, cache_in, cache_out, planned; empty when not segmented). Bytes.
        """
    def dit_desc(self, high_noise: bool) -> str:
        """
        sd.cpp's description of the DiT it would build (its model name).
        """
    def dit_graph(self, high_noise: bool, x: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], clip_fea: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], c_concat: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], vace_context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], timesteps: typing.SupportsInt | typing.SupportsIndex, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, tensor_ceiling: typing.SupportsInt | typing.SupportsIndex = 0) -> dict[str, typing.Any]:
        """
        vace_context: a VACE DiT's control context ([] for none). tensor_ceiling: the device's largest single tensor (0: none), as a real run registers it with set_tensor_ceiling; the DiT's feed-forward block is chunked above it (patch 0007).
        """
    def dit_plan(self, high_noise: bool, x: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], clip_fea: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], c_concat: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], vace_context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], timesteps: typing.SupportsInt | typing.SupportsIndex, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, tensor_ceiling: typing.SupportsInt | typing.SupportsIndex, budget: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        """
        sd.cpp's max_vram plan of dit_graph's graph for a budget in bytes (> 0). The dict: segmented (whether sd.cpp runs it segment by segment; False: its ordinary path, all weights on the device and one compute buffer, measured after planning), segments (after the budget merge; 1 when not segmented), base_segments, smallest_budget (the largest need sd.cpp plans for one base segment: the smallest budget no segment exceeds), device_peak (the most a segment holds on the device at once: params, compute, cache in and out; or weights + compute), largest_params, largest_compute, largest_cache (single buffers), largest_tensor (bytes), largest_tensor_name, largest_tensor_shape, largest_tensor_type, per_segment (dicts: name, params, compute, cache_in, cache_out, planned; empty when not segmented). Bytes.
        """
    def has(self, prefix: str) -> bool:
        """
        Whether any tensor name starts with prefix.
        """
    def t5_graph(self, tokens: typing.SupportsInt | typing.SupportsIndex, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        ...
    def t5_plan(self, tokens: typing.SupportsInt | typing.SupportsIndex, flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, budget: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        """
        sd.cpp's max_vram plan of t5_graph's graph for a budget in bytes (> 0). The dict: segmented (whether sd.cpp runs it segment by segment; False: its ordinary path, all weights on the device and one compute buffer, measured after planning), segments (after the budget merge; 1 when not segmented), base_segments, smallest_budget (the largest need sd.cpp plans for one base segment: the smallest budget no segment exceeds), device_peak (the most a segment holds on the device at once: params, compute, cache in and out; or weights + compute), largest_params, largest_compute, largest_cache (single buffers), largest_tensor (bytes), largest_tensor_name, largest_tensor_shape, largest_tensor_type, per_segment (dicts: name, params, compute, cache_in, cache_out, planned; empty when not segmented). Bytes.
        """
    def tae_graph(self, decode: bool, input: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, conv_direct: bool = False) -> dict[str, typing.Any]:
        """
        The tiny video decoder's (TAEHV) graph: decoding latents or encoding pixels.
        """
    def vae_graph(self, decode: bool, input: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], flash_attention: bool, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex, conv_direct: bool = False) -> dict[str, typing.Any]:
        ...
    def weights(self, component: str, alignment: typing.SupportsInt | typing.SupportsIndex, max_size: typing.SupportsInt | typing.SupportsIndex) -> dict[str, typing.Any]:
        """
        A component's weights buffer and largest tensor; "vae decoder" and "tiny_vae decoder": the VAE's as sd.cpp loads it with vae_decode_only (no encoder).
        """
def backend_devices() -> list[dict[str, typing.Any]]:
    """
    Every ggml backend device compiled in, in ggml's order, with memory figures.
    """
def convert_tensor_names(names: collections.abc.Sequence[str], prefix: str) -> list[str]:
    """
    The names sd.cpp gives these tensors of a Wan file loaded with `prefix` ("lora." for a LoRA, "lora.model.high_noise_" for a high-noise LoRA, "model.diffusion_model." for the DiT).
    """
def env_vars_read() -> list[str]:
    """
    Environment variables read (getenv) by the sources compiled into this module.
    """
def num_physical_cores() -> int:
    """
    sd.cpp's default thread count.
    """
def sample_methods() -> list[str]:
    """
    sd.cpp's sample method names, in its enum order.
    """
def schedulers() -> list[str]:
    """
    sd.cpp's scheduler names, in its enum order.
    """
def sdcpp_system_info() -> str:
    """
    sd.cpp's own feature line (SIMD flags and the like).
    """
def sdcpp_version() -> str:
    """
    The stable-diffusion.cpp version string compiled in.
    """
def set_log_sink(sink: collections.abc.Callable[[str, str, str], None] | None) -> None:
    """
    Route sd.cpp and ggml log lines to sink(source, level, text); None stops routing (do so at exit: native destructors may log while the interpreter shuts down).
    """
def set_tensor_ceiling(device: str, nbytes: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Tell sd.cpp the largest single tensor the ggml device named `device` can hold (0: no ceiling). The Wan DiT computes its feed-forward block in token chunks above it (patch 0007), as the pre-flight measures with the same ceiling.
    """
def tensor_ceiling(device: str) -> int:
    """
    The ceiling set_tensor_ceiling gave `device` (0: none).
    """
def thread_stack_left() -> int:
    """
    Bytes of stack left on the calling thread (-1 where the platform does not say).
    """
def vulkan_device_limits() -> list[dict[str, typing.Any]]:
    """
    Driver limits of the Vulkan devices ggml uses, in ggml's order (Vulkan0, Vulkan1, ...); empty in builds without Vulkan.
    """
BACKEND: str
PROMPT_STACK_PER_BYTE: int
SDCPP_SOURCE: str
