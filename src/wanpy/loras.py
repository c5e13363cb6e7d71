"""LoRA files: which model tensors they name, checked before a generation.

sd.cpp applies a LoRA it cannot use as nothing: a file that fails to load is logged and
skipped, and one whose tensors name no layer of the loaded models adds zero tensors. The
video then comes out without the LoRA and nothing says so. wanpy reads the file's header
and converts its tensor names with sd.cpp's own rules (``_core.convert_tensor_names``) so
that such a LoRA is refused before any sampling. A high-noise LoRA targets the high-noise
expert's tensors only, whether sd.cpp merges it (unquantized weights) or applies it at run
time (quantized weights: patch 0006, without which sd.cpp 0.4.7 dropped it there).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

from wanpy import _core
from wanpy.catalogue import COMPONENTS
from wanpy.errors import ModelFileError
from wanpy.headers import read_header_cached

# The suffixes sd.cpp's converted LoRA tensor names end with (src/lora.hpp), after the
# model tensor they modify ("<tensor>.lora_down", "<tensor>.alpha", ...).
_LORA_SUFFIX = re.compile(r"\.(lora_down|lora_up|lora_mid|alpha|scale|diff|hada_w[12]_[ab]|hada_t[12]|"
                          r"lokr_w[12](_[ab])?)$")
# lora.hpp also looks up split tensors as "<tensor>.1", "<tensor>.2", ...
_SPLIT_INDEX = re.compile(r"\.\d+$")

# The prefixes sd.cpp loads each model file with (stable-diffusion.cpp), by argument.
MODEL_PREFIXES = {c.argument: c.load_prefix for c in COMPONENTS.values()}
logger = logging.getLogger("wanpy")

_LORA_PREFIX = "lora."
_HIGH_NOISE_LORA_PREFIX = "lora.model.high_noise_"


@dataclass(frozen=True)
class LoraTargets:
    """What one LoRA file holds: its LoRA tensors and the model tensors they modify
    (sd.cpp's names, e.g. ``model.diffusion_model.blocks.0.self_attn.q.weight``), with the
    row-major shapes of the parts whose shapes must agree with that tensor's."""

    path: str
    lora_tensors: int
    other_tensors: tuple[str, ...]
    # target -> {"lora_down": shape, "lora_up": shape, "diff": shape} (those present)
    targets: dict[str, dict[str, tuple[int, ...]]]


def lora_targets(path: str | os.PathLike[str], *, high_noise: bool = False) -> LoraTargets:
    """Read a LoRA file's header (no data) and name the model tensors it modifies."""
    tensors = read_header_cached(path).tensors
    names = list(tensors)
    converted = _core.convert_tensor_names(names, _HIGH_NOISE_LORA_PREFIX if high_noise else _LORA_PREFIX)
    targets: dict[str, dict[str, tuple[int, ...]]] = {}
    others = []
    for original, name in zip(names, converted):
        m = _LORA_SUFFIX.search(name)
        if m is None or not name.startswith(_LORA_PREFIX):
            others.append(original)
            continue
        target = _SPLIT_INDEX.sub("", name[len(_LORA_PREFIX):m.start()])
        parts = targets.setdefault(target, {})
        if m.group(1) in ("lora_down", "lora_up", "diff"):
            parts[m.group(1)] = tensors[original].shape
    return LoraTargets(os.fspath(path), len(names) - len(others), tuple(others), targets)


def model_tensor_shapes(path: str | os.PathLike[str], slot: str) -> dict[str, tuple[int, ...]]:
    """sd.cpp's name -> row-major shape of each tensor of the model file in ``slot``
    (a key of MODEL_PREFIXES)."""
    tensors = read_header_cached(path).tensors
    names = _core.convert_tensor_names([n.removeprefix(MODEL_PREFIXES["diffusion_model"]) for n in tensors],
                                       MODEL_PREFIXES[slot])
    return {name: t.shape for name, t in zip(names, tensors.values())}


def _shape_problem(parts: dict[str, tuple[int, ...]], weight: tuple[int, ...]) -> str | None:
    """Why sd.cpp's merge (up @ down, or diff, added to the weight) would not fit ``weight``
    (ggml aborts the process on such a shape), or None."""
    numel = math.prod(weight)
    down, up, diff = parts.get("lora_down"), parts.get("lora_up"), parts.get("diff")
    if diff is not None and math.prod(diff) != numel:
        return f"diff {list(diff)}"
    if down is not None and up is not None:
        if (len(down) < 2 or len(up) < 2 or up[0] != weight[0] or down[0] != up[1]
                or math.prod(down[1:]) * up[0] != numel):
            return f"lora_down {list(down)} / lora_up {list(up)}"
    return None


def check_lora_file(label: str, path: str, *, high_noise: bool, model_files: dict[str, str | None]) -> LoraTargets:
    """Refuse a LoRA sd.cpp would apply as nothing, or whose shapes would abort the process
    (ggml asserts); returns what it targets. ``model_files``: slot -> path of the pipeline's
    files (headers are read once per file version)."""
    try:
        found = lora_targets(path, high_noise=high_noise)
    except ModelFileError as exc:
        raise ModelFileError(f"{label}: {exc}", path=path) from exc
    if not found.targets:
        example = ", ".join(found.other_tensors[:3])
        raise ModelFileError(
            f"{label}: {path!r} holds no LoRA tensors (names ending in lora_down/lora_up, lora_A/lora_B, alpha, "
            f"diff, hada_* or lokr_*){f'; its tensors are named like {example}' if example else ''}: is it a "
            "LoRA?", path=path)
    slots = ("high_noise_diffusion_model",) if high_noise else ("diffusion_model", "text_encoder", "vae")
    model: dict[str, tuple[int, ...]] = {}
    for slot in slots:
        slot_path = model_files.get(slot)
        if slot_path:
            model.update(model_tensor_shapes(slot_path, slot))
    matched = [t for t in found.targets if t in model]
    if not matched:
        sample = sorted(found.targets)[:2]
        expert = "the high-noise expert" if high_noise else "this pipeline's models"
        raise ModelFileError(
            f"{label}: none of the {len(found.targets)} layers {path!r} modifies is in {expert} (it names e.g. "
            f"{', '.join(sample)}): sd.cpp would apply it as nothing. Is it a LoRA for another model?", path=path)
    for target in sorted(matched):
        problem = _shape_problem(found.targets[target], model[target])
        if problem is not None:
            raise ModelFileError(
                f"{label}: {path!r} is not for this model: its {problem} for {target} does not fit that "
                f"weight's shape {list(model[target])} (a LoRA trained for another Wan size?)", path=path)
    if len(matched) < len(found.targets):
        missing = sorted(set(found.targets) - set(matched))
        logger.warning("%s: %d of the %d layers %s modifies are not in the model (e.g. %s): sd.cpp applies the "
                       "other %d", label, len(missing), len(found.targets), path, ", ".join(missing[:2]),
                       len(matched))
    return found
