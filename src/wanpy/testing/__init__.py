"""Random-weight Wan model files with the real architecture and file formats, for tests.

No Wan model is small: sd.cpp hard-codes the hyper-parameters by block count, so the
smallest set it loads is a Wan2.1-T2V-1.3B DiT (~0.8 GB at q4_0) and the Wan2.1 VAE
(~250 MB). ``make_model_set`` writes such sets with the tensor names, shapes and types
of the published files (see ``wanpy.testing.wan_layouts``) and random values scaled so
activations stay finite through the real network: frames come out deterministic,
NaN-free, and different for each seed. The same arguments always give byte-identical
files. ``sparse=True`` writes full-size files whose data region is a hole (no disk
used), for tests that only read headers, such as the pre-flight checks of 14B models.

``cached_model_set`` keeps sets in a per-machine cache (``$WANPY_MODEL_CACHE``, default
``~/.cache/wanpy/models``), keyed by variant, dtype, seed and ``KIT_VERSION``.

Writing the Wan2.1-T2V-1.3B q4_0 set (0.81 GB DiT + 0.25 GB VAE) takes a few seconds on
two cores; a sparse set of any variant takes milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanpy import layouts as wan_layouts
from wanpy.catalogue import FAMILIES, PRESET_ALIASES
from wanpy.testing._writer import planned_size, write_file
from wanpy.layouts import DIT_CONFIGS, GGML_NAMES, TensorSpec

__all__ = [
    "KIT_VERSION", "DTYPES", "VARIANTS", "ModelSet", "SetLayout", "cache_dir", "cached_model_set",
    "cached_tiny_vae", "make_lora", "make_model_set", "make_tiny_vae", "write_model_file",
]

# Bump whenever the bytes the kit writes change: cached sets of other versions are not reused.
KIT_VERSION = 1

DTYPES = tuple(GGML_NAMES)

logger = logging.getLogger("wanpy")


@dataclass(frozen=True)
class SetLayout:
    """What a variant's set holds: its DiT config (``wan_layouts.DIT_CONFIGS``), its VAE
    version, whether it has two experts (Wan2.2 A14B) and CLIP vision (Wan2.1 I2V/FLF2V),
    and the wanpy family (``wanpy.catalogue.FAMILIES``) it stands for."""

    dit: str
    vae: str
    family: str
    two_experts: bool = False
    clip_vision: bool = False


_VARIANT_NAMES = {family: alias for alias, family in PRESET_ALIASES.items()}
# One set per published family (named like the pre-flight presets), from the catalogue.
VARIANTS: dict[str, SetLayout] = {
    _VARIANT_NAMES.get(f.name, f.name): SetLayout(f.dit.key, f.vae.version, f.name, two_experts=f.two_experts,
                                                  clip_vision=f.needs_clip_vision)
    for f in FAMILIES.values()
}

# llama.cpp's general.file_type for a file "mostly" of each type
_FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_k": 14,
               "q5_k": 16, "q6_k": 18, "bf16": 32}


@dataclass(frozen=True)
class ModelSet:
    """The files of one set, named like the pipeline's arguments (None where the set has none)."""

    diffusion_model: Path
    high_noise_diffusion_model: Path | None
    vae: Path
    text_encoder: Path | None
    clip_vision: Path | None
    variant: str
    dtype: str
    seed: int
    sparse: bool = False

    @property
    def family(self) -> str:
        """The wanpy family (``wanpy.catalogue.FAMILIES``) this set stands for."""
        return VARIANTS[self.variant].family

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.diffusion_model, self.high_noise_diffusion_model, self.vae,
                                 self.text_encoder, self.clip_vision) if p is not None)

    def pipeline_kwargs(self) -> dict[str, str]:
        """The paths as keyword arguments for ``WanPipeline`` / ``generate_video``."""
        return {k: str(v) for k, v in (("diffusion_model", self.diffusion_model), ("vae", self.vae),
                                       ("high_noise_diffusion_model", self.high_noise_diffusion_model),
                                       ("text_encoder", self.text_encoder), ("clip_vision", self.clip_vision))
                if v is not None}


@dataclass(frozen=True)
class _FilePlan:
    slot: str
    name: str
    fmt: str
    specs: list[TensorSpec]
    metadata: dict[str, Any]
    seed_key: str


def _check_args(variant: Any, dtype: Any, seed: Any, text_encoder: Any, vae_format: Any, sparse: Any) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if dtype not in GGML_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(GGML_NAMES)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    for name, flag in (("text_encoder", text_encoder), ("sparse", sparse)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if vae_format not in ("safetensors", "gguf"):
        raise ValueError(f"vae_format must be 'safetensors' or 'gguf', got {vae_format!r}")


def _plan(variant: str, dtype: str, seed: int, text_encoder: bool, vae_format: str) -> list[_FilePlan]:
    layout = VARIANTS[variant]
    tag = GGML_NAMES[dtype]

    def gguf_meta(component: str, arch: str | None, file_type: int | None) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if arch:
            meta["general.architecture"] = arch
        meta["general.quantization_version"] = 2
        if file_type is not None:
            meta["general.file_type"] = file_type
        meta.update({"wanpy.testing.kit_version": KIT_VERSION, "wanpy.testing.seed": seed,
                     "wanpy.testing.component": component})
        return meta

    def st_meta(component: str) -> dict[str, str]:
        return {"format": "pt", "wanpy.testing.kit_version": str(KIT_VERSION), "wanpy.testing.seed": str(seed),
                "wanpy.testing.component": component}

    plans = []
    dit_specs = wan_layouts.dit_layout(DIT_CONFIGS[layout.dit], dtype)
    if layout.two_experts:
        for slot, expert in (("high_noise_diffusion_model", "high-noise"), ("diffusion_model", "low-noise")):
            plans.append(_FilePlan(slot, f"{variant}-{expert}-{tag}.gguf", "gguf", dit_specs,
                                   gguf_meta(f"{variant} {expert}", "wan", _FILE_TYPES[dtype]), f"{variant}:{slot}"))
    else:
        plans.append(_FilePlan("diffusion_model", f"{variant}-{tag}.gguf", "gguf", dit_specs,
                               gguf_meta(variant, "wan", _FILE_TYPES[dtype]), f"{variant}:diffusion_model"))
    vae = f"wan{layout.vae}-vae"
    vae_specs = wan_layouts.vae_layout(layout.vae)
    if vae_format == "gguf":
        plans.append(_FilePlan("vae", f"{vae}.gguf", "gguf", vae_specs, gguf_meta(vae, None, 1), vae))
    else:
        plans.append(_FilePlan("vae", f"{vae}.safetensors", "safetensors", vae_specs, st_meta(vae), vae))
    if text_encoder:
        plans.append(_FilePlan("text_encoder", f"umt5-xxl-encoder-{tag}.gguf", "gguf",
                               wan_layouts.umt5_xxl_layout(dtype), gguf_meta("umt5-xxl", "t5encoder",
                                                                             _FILE_TYPES[dtype]), "umt5-xxl"))
    if layout.clip_vision:
        plans.append(_FilePlan("clip_vision", "clip-vision-h.safetensors", "safetensors",
                               wan_layouts.clip_vision_h_layout(), st_meta("clip-vision-h"), "clip-vision-h"))
    return plans


def _build(directory: Path, variant: str, dtype: str, seed: int, text_encoder: bool, vae_format: str,
           sparse: bool, reuse: bool) -> ModelSet:
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for plan in _plan(variant, dtype, seed, text_encoder, vae_format):
        path = directory / plan.name
        paths[plan.slot] = path
        if reuse and path.is_file() and path.stat().st_size == planned_size(plan.specs, plan.fmt, plan.metadata):
            continue
        start = time.perf_counter()
        size = write_file(path, plan.specs, plan.fmt, plan.metadata, seed=seed, seed_key=plan.seed_key,
                          sparse=sparse)
        logger.info("wrote %s%s (%.2f GB) in %.1f s", path, " (sparse)" if sparse else "", size / 1e9,
                    time.perf_counter() - start)
    return ModelSet(diffusion_model=paths["diffusion_model"], vae=paths["vae"],
                    high_noise_diffusion_model=paths.get("high_noise_diffusion_model"),
                    text_encoder=paths.get("text_encoder"), clip_vision=paths.get("clip_vision"),
                    variant=variant, dtype=dtype, seed=seed, sparse=sparse)


def make_model_set(directory: str | os.PathLike[str], *, variant: str = "wan2.1-t2v-1.3b", dtype: str = "q4_0",
                   seed: int = 0, text_encoder: bool = False, vae_format: str = "safetensors",
                   sparse: bool = False) -> ModelSet:
    """Write a random-weight model set into ``directory`` (created if needed) and return its paths.

    ``variant`` is one of ``VARIANTS``; ``dtype`` (one of ``DTYPES``) is the type of the
    DiT's (and text encoder's) Linear weights, in GGUF; conv weights are F16 and norms,
    biases and modulations F32, as in the published GGUF files. The VAE is F16, as
    safetensors (``vae_format="safetensors"``) or GGUF. ``text_encoder=True`` adds
    umt5-xxl (GGUF, ~3.2 GB at q4_0). Existing files of the same names are overwritten.
    """
    _check_args(variant, dtype, seed, text_encoder, vae_format, sparse)
    return _build(Path(directory), variant, dtype, int(seed), text_encoder, vae_format, sparse, reuse=False)


def cache_dir() -> Path:
    """The per-machine cache root: ``$WANPY_MODEL_CACHE``, else ``~/.cache/wanpy/models``."""
    root = os.environ.get("WANPY_MODEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "wanpy" / "models"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the set's directory, so concurrent processes write each file once."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): atomic renames still keep every file whole
        yield
        return
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_model_set(*, variant: str = "wan2.1-t2v-1.3b", dtype: str = "q4_0", seed: int = 0,
                     text_encoder: bool = False, vae_format: str = "safetensors", sparse: bool = False) -> ModelSet:
    """``make_model_set`` through the per-machine cache: files already there are reused."""
    _check_args(variant, dtype, seed, text_encoder, vae_format, sparse)
    seed = int(seed)
    directory = cache_dir() / f"kit-v{KIT_VERSION}" / f"{variant}-{dtype}-seed{seed}{'-sparse' if sparse else ''}"
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        return _build(directory, variant, dtype, seed, text_encoder, vae_format, sparse, reuse=True)


def write_model_file(path: str | os.PathLike[str], tensors: list[TensorSpec], *, format: str, seed: int = 0,
                     seed_key: str = "", sparse: bool = False, metadata: dict[str, Any] | None = None) -> Path:
    """Write any tensor table (e.g. a hand-made or deliberately wrong one) as GGUF or safetensors."""
    if format not in ("gguf", "safetensors"):
        raise ValueError(f"format must be 'gguf' or 'safetensors', got {format!r}")
    path = Path(path)
    write_file(path, tensors, format, dict(metadata or {}), seed=seed, seed_key=seed_key, sparse=sparse)
    return path


def make_tiny_vae(path: str | os.PathLike[str], *, name: str = "taehv-wan2.1", seed: int = 0) -> Path:
    """Write a random TAEHV (``wanpy.catalogue.TINY_VAES``: "taehv-wan2.1" or "taehv-wan2.2") as
    safetensors, with the tensor names and shapes of madebyollin/taehv's files (F16 weights, F32 biases)."""
    from wanpy.catalogue import TINY_VAES

    if name not in TINY_VAES:
        raise ValueError(f"unknown tiny VAE {name!r}; known: {', '.join(TINY_VAES)}")
    meta = {"format": "pt", "wanpy.testing.kit_version": str(KIT_VERSION), "wanpy.testing.seed": str(seed),
            "wanpy.testing.component": name}
    path = Path(path)
    write_file(path, wan_layouts.taehv_layout(name), "safetensors", meta, seed=seed, seed_key=name, sparse=False)
    return path


def cached_tiny_vae(*, name: str = "taehv-wan2.1", seed: int = 0) -> Path:
    """``make_tiny_vae`` through the per-machine cache (a few MB: written once)."""
    directory = cache_dir() / f"kit-v{KIT_VERSION}" / "tiny-vae"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-seed{seed}.safetensors"
    with _locked(directory):
        if not path.is_file():
            make_tiny_vae(path, name=name, seed=seed)
    return path


# the Linear layers of every Wan DiT block a LoRA commonly trains
LORA_LAYERS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
               "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def make_lora(path: str | os.PathLike[str], diffusion_model: str | os.PathLike[str], *, rank: int = 4,
              layers: tuple[str, ...] = LORA_LAYERS, blocks: range | None = None, naming: str = "diffusers",
              init: str = "uniform", strength: float = 1.0, seed: int = 0) -> Path:
    """Write a random LoRA (safetensors, F16) for the Wan DiT ``diffusion_model``.

    One lora_down [rank, in] / lora_up [out, rank] pair per ``layers`` entry of each of
    ``blocks`` (default: all), with the shapes read from the DiT's header. ``naming``:
    "diffusers" (``diffusion_model.blocks.0.self_attn.q.lora_A.weight``, as Wan LoRAs trained
    with diffusers/musubi are published) or "kohya" (``lora_unet_blocks_0_self_attn_q.lora_down.weight``).
    ``init="zeros"`` writes lora_up as zeros: a LoRA that changes nothing. ``strength`` scales
    lora_up: at 1.0 the update's values are about those of the weight it modifies.
    """
    from wanpy.headers import read_header

    if naming not in ("diffusers", "kohya"):
        raise ValueError(f"naming must be 'diffusers' or 'kohya', got {naming!r}")
    if init not in ("uniform", "zeros"):
        raise ValueError(f"init must be 'uniform' or 'zeros', got {init!r}")
    header = read_header(diffusion_model)
    n_blocks = 1 + max(int(name.split(".")[1]) for name in header.tensors if name.startswith("blocks."))
    specs = []
    for i in blocks if blocks is not None else range(n_blocks):
        for layer in layers:
            weight = header.tensors.get(f"blocks.{i}.{layer}.weight")
            if weight is None or len(weight.shape) != 2:
                raise ValueError(f"{diffusion_model}: no Linear weight blocks.{i}.{layer}.weight")
            out_dim, in_dim = weight.shape
            stem = (f"diffusion_model.blocks.{i}.{layer}" if naming == "diffusers"
                    else f"lora_unet_blocks_{i}_{layer.replace('.', '_')}")
            down, up = ("lora_A", "lora_B") if naming == "diffusers" else ("lora_down", "lora_up")
            # down @ x keeps x's scale (rank outputs); up spreads them over out_dim like the weight
            specs.append(TensorSpec(f"{stem}.{down}.weight", (rank, in_dim), "F16", "uniform",
                                    wan_layouts._lecun(in_dim)))
            specs.append(TensorSpec(f"{stem}.{up}.weight", (out_dim, rank), "F16", init,
                                    strength * wan_layouts._lecun(rank) if init == "uniform" else 0.0))
    return write_model_file(path, specs, format="safetensors", seed=seed, seed_key="lora")
