"""What sd.cpp will make of a model file: which Wan DiT, VAE, text encoder or CLIP vision.

``identify`` classifies a header (``wanpy.headers.read_header``) the way stable-diffusion.cpp
does (``src/model.cpp``'s version detection and ``src/wan.hpp``'s ``WanRunner``), with the
hyper-parameters sd.cpp will build (from ``wanpy.catalogue``) and the problems that would make
sd.cpp fail (or abort the process) when it loads the file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from wanpy.catalogue import CLIP_VISION, COMPONENTS, DITS, TEXT_ENCODER, TINY_VAES, VAES, DitShape, families_of
from wanpy.headers import ModelHeader, TensorInfo, file_version, header_of_version

__all__ = ["ModelKind", "accepted_prefixes", "identify", "identify_file", "sdcpp_ne"]


def accepted_prefixes(*arguments: str) -> frozenset[str]:
    """The tensor-name prefixes sd.cpp accepts in a file given as one of these arguments
    (``wanpy.catalogue.COMPONENTS``): the prefixes real files carry, the one sd.cpp loads it
    with, and the one its graphs use ("" is the original names)."""
    return frozenset(p for a in arguments for c in (COMPONENTS[a],)
                     for p in (*c.file_prefixes, c.load_prefix, c.graph_prefix))


_T5, _CLIP = TEXT_ENCODER, CLIP_VISION
_UMT5 = (_T5.vocab_size, _T5.dim, _T5.num_layers, _T5.num_heads)
_CLIP_VIT_H = (_CLIP.hidden, _CLIP.num_layers, _CLIP.ffn_dim)


@dataclass(frozen=True)
class ModelKind:
    """What a model file is, as sd.cpp will see it.

    ``kind`` is "dit", "vae", "text_encoder", "clip_vision", "tiny_vae" (TAEHV) or "unknown". ``name`` is
    sd.cpp's own name for it ("Wan2.1-T2V-1.3B", "Wan2.x-T2V-14B", "Wan2.1-VAE", "umt5-xxl",
    ...), None when sd.cpp would not recognise it. ``family`` is the wanpy family
    (a ``wanpy.catalogue.FAMILIES`` name) or component family ("wan2.1-vae", "wan2.2-vae",
    "umt5-xxl", "clip-vision-h"); ``families`` lists every family a file of these shapes
    can belong to (a 40-block T2V DiT is Wan2.1-T2V-14B *or* an expert of Wan2.2-T2V-A14B:
    ``family`` is then the single-expert reading, and the caller decides from whether a
    high-noise expert is given). ``problems`` says why sd.cpp would fail to load it or abort
    on it (e.g. a DiT with 29 blocks); ``supported`` is True when there are none.

    Hyper-parameters (None where they do not apply): ``blocks`` (DiT blocks, T5 or CLIP
    layers), ``dim``, ``ffn_dim``, ``num_heads``, ``in_channels`` and ``out_channels`` (DiT
    latent channels in/out), ``patch_size`` (t, h, w), ``text_dim``, ``freq_dim``,
    ``has_image_embedding`` (Wan2.1 I2V/FLF2V ``img_emb``: needs CLIP vision),
    ``vace_blocks``, ``z_dim`` (VAE latent channels), ``has_encoder`` (VAE encoder
    weights present: sd.cpp's video mode needs them), ``vocab_size`` (text encoder).
    ``prefix`` is the tensor-name prefix found ("" or e.g. "model.diffusion_model.");
    ``components`` every kind found in the file (an all-in-one checkpoint has several).
    """

    kind: str
    name: str | None = None
    family: str | None = None
    families: tuple[str, ...] = ()
    prefix: str = ""
    components: tuple[str, ...] = ()
    blocks: int | None = None
    dim: int | None = None
    ffn_dim: int | None = None
    num_heads: int | None = None
    in_channels: int | None = None
    out_channels: int | None = None
    patch_size: tuple[int, int, int] | None = None
    text_dim: int | None = None
    freq_dim: int | None = None
    has_image_embedding: bool = False
    vace_blocks: int = 0
    z_dim: int | None = None
    has_encoder: bool | None = None
    vocab_size: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def supported(self) -> bool:
        return self.kind != "unknown" and self.name is not None and not self.problems

    def __str__(self) -> str:
        if self.kind == "unknown":
            return "unknown model (not a Wan DiT, Wan VAE, umt5-xxl or CLIP ViT-H file)"
        parts = [f"{self.kind} {self.name or '(not recognised by sd.cpp)'}"]
        for label, value in (("blocks", self.blocks), ("dim", self.dim), ("ffn", self.ffn_dim),
                             ("heads", self.num_heads), ("in", self.in_channels), ("out", self.out_channels),
                             ("z_dim", self.z_dim), ("vocab", self.vocab_size)):
            if value is not None:
                parts.append(f"{label} {value}")
        if self.has_image_embedding:
            parts.append("image embedding")
        if self.has_encoder is not None:
            parts.append("with encoder" if self.has_encoder else "decoder only")
        text = ", ".join(parts)
        if self.problems:
            text += "; problems: " + "; ".join(self.problems)
        return text

def sdcpp_ne(t: TensorInfo, fmt: str) -> tuple[int, ...]:
    """The 4-D ggml ne sd.cpp stores for a tensor (it folds 5-D shapes; src/model_io/)."""
    shape = list(t.shape)
    if fmt == "safetensors":
        if len(shape) == 5:
            shape = [shape[0] * shape[1]] + shape[2:]
        ne = list(reversed(shape))
    else:
        ne = list(reversed(shape))
        if len(ne) > 4:
            ne = ne[:3] + [math.prod(ne[3:])]
    return tuple(ne + [1] * (4 - len(ne)))


def _atoi(s: str) -> int:
    m = re.match(r"\s*[+-]?\d+", s)
    return int(m.group()) if m else 0


def _find_prefix(names: list[str], *markers: str) -> str | None:
    """The prefix of the first name ending with one of the markers ("" is a prefix too)."""
    for n in names:
        for marker in markers:
            if n.endswith(marker):
                return n[: len(n) - len(marker)]
    return None


def identify(header: ModelHeader) -> ModelKind:
    """Classify a model file the way sd.cpp would (see ``ModelKind``)."""
    names = list(header.tensors)
    found = {
        "dit": _find_prefix(names, "time_projection.1.weight"),
        "vae": _find_prefix(names, "decoder.middle.1.to_qkv.weight"),
        "text_encoder": _find_prefix(names, "encoder.block.0.layer.0.SelfAttention.q.weight",
                                     "enc.blk.0.attn_q.weight"),
        "clip_vision": _find_prefix(names, "vision_model.encoder.layers.0.self_attn.q_proj.weight"),
        "tiny_vae": _find_prefix(names, "decoder.3.conv.0.weight"),
    }
    components = tuple(k for k, p in found.items() if p is not None)
    file_problems = _sdcpp_file_problems(header)
    if not components:
        return ModelKind("unknown", problems=file_problems)
    main = components[0]
    prefix = found[main]
    assert prefix is not None
    identify_main = {"dit": _identify_dit, "vae": _identify_vae, "text_encoder": _identify_text_encoder,
                     "clip_vision": _identify_clip_vision, "tiny_vae": _identify_tiny_vae}[main]
    kind = identify_main(header, prefix, components)
    if file_problems:
        kind = dataclasses.replace(kind, problems=file_problems + kind.problems)
    return kind


def identify_file(path: str | os.PathLike[str]) -> ModelKind:
    """``identify(read_header(path))``, once per version of the file (path, size, mtime)."""
    return _identify_version(*file_version(path))


@functools.lru_cache(maxsize=64)
def _identify_version(path: str, size: int, mtime_ns: int) -> ModelKind:
    return identify(header_of_version(path, size, mtime_ns))


# Types ggml has no CPU dot product for. sd.cpp gives a Linear weight (and the DiT modulation)
# its file's type, so the first matmul with one calls a NULL function: SIGSEGV mid-sampling
# (measured: I8, I32, F64, Q8_1, Q8_K). Safetensors F64 is converted to F32 on load; I64 to I32.
_NO_COMPUTE_TYPES = {"gguf": frozenset({"F64", "I8", "I16", "I32", "I64", "Q8_1", "Q8_K"}),
                     "safetensors": frozenset({"I8", "I16", "I32", "I64"})}
_SDCPP_SAFETENSORS_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "U8"})


def _sdcpp_file_problems(h: ModelHeader) -> tuple[str, ...]:
    """What sd.cpp's readers (src/model_io/) cannot cope with in a well-formed file."""
    problems = []
    no_compute = _NO_COMPUTE_TYPES[h.format]
    for t in h.tensors.values():
        if t.dtype in no_compute and t.name.endswith((".weight", "modulation")):
            problems.append(f"tensor {t.name!r} is {t.dtype}, a type ggml cannot compute with: sd.cpp would "
                            "crash (SIGSEGV) at the first step that uses it; convert the file to float or "
                            "quantized weights")
            break
    if h.format == "gguf":
        # ggml rejects >4-D tensors; sd.cpp then re-reads the file with its own GGUFReader,
        # which misparses array metadata (it expects a key before every element).
        if any(len(t.shape) > 4 for t in h.tensors.values()):
            arrays = [k for k, v in h.metadata.items() if isinstance(v, list)]
            if arrays:
                problems.append(f"5-D tensors together with array metadata ({arrays[0]!r}): sd.cpp's fallback "
                                "GGUF reader misreads such files")
            long_keys = [k for k in h.metadata if len(k.encode()) > 4096]
            if long_keys:
                problems.append("a metadata key longer than 4096 bytes: sd.cpp's fallback GGUF reader refuses it")
    else:
        for t in h.tensors.values():
            if len(t.shape) > 5:
                problems.append(f"tensor {t.name!r} has {len(t.shape)} dimensions; sd.cpp reads at most 5")
                break
        bad = sorted({t.dtype for t in h.tensors.values()} - _SDCPP_SAFETENSORS_DTYPES)
        if bad:
            problems.append(f"safetensors dtype {bad[0]} is not supported by sd.cpp")
    return tuple(problems)


# --- Wan DiTs -----------------------------------------------------------------------------------

# src/model.cpp tells the Wan2.2 DiTs from the others by patch_embedding's folded size
# (dim x input channels) when the file has no image embedding.
_WAN2_2_BY_PATCH = {d.dim * d.in_dim: d for d in DITS.values() if d.sdcpp_name.startswith("Wan2.2")}
_BLOCK_COUNTS = sorted({d.num_layers for d in DITS.values()})
_IMAGE_BEFORE_VACE = 40  # the block count whose WanRunner branch checks img_emb before VACE blocks


@dataclass(frozen=True)
class _DitScan:
    """What sd.cpp reads from a DiT file's tensor names before it builds the model."""

    blocks: int
    vace_blocks: int
    has_img_emb: bool  # img_emb.* tensors (what the version detection looks at)
    i2v: bool  # an img_emb name outside the blocks: WanRunner's "i2v" model type
    flf: bool  # img_emb.emb_pos
    wan2_2: DitShape | None  # the Wan2.2 DiT src/model.cpp's version detection found


def _scan_dit(h: ModelHeader, p: str) -> _DitScan:
    """src/model.cpp get_sd_version() and src/wan.hpp WanRunner's look at the names."""
    t = h.tensors
    patch = t.get(p + "patch_embedding.weight")
    patch_channels = sdcpp_ne(patch, h.format)[3] if patch is not None else 0
    has_img_emb = any(n.startswith(p + "img_emb") for n in t)
    wan2_2 = None if has_img_emb else _WAN2_2_BY_PATCH.get(patch_channels)
    blocks = vace_blocks = 0
    i2v = flf = False
    for n in t:
        if not n.startswith(p):
            continue
        rest = n[len(p):]
        pos = rest.find("vace_blocks.")
        if pos >= 0:
            items = rest[pos:].split(".")
            vace_blocks = max(vace_blocks, _atoi(items[1]) + 1) if len(items) > 1 else vace_blocks
            continue
        pos = rest.find("blocks.")
        if pos >= 0:
            items = rest[pos:].split(".")
            blocks = max(blocks, _atoi(items[1]) + 1) if len(items) > 1 else blocks
            continue
        i2v = i2v or "img_emb" in rest
        flf = flf or "img_emb.emb_pos" in rest
    return _DitScan(blocks, vace_blocks, has_img_emb, i2v, flf, wan2_2)


def _wan_runner_choice(scan: _DitScan) -> DitShape | None:
    """The DiT sd.cpp builds (src/wan.hpp WanRunner), None for a block count it does not run.

    The block count decides the size; then, for 30 blocks: a Wan2.2 (TI2V) version, VACE
    blocks, an image embedding, in that order; for 40 blocks: without an image embedding a
    Wan2.2 (I2V) version, then VACE blocks; with one, FLF2V's position embedding."""
    if scan.wan2_2 is not None and scan.wan2_2.num_layers == scan.blocks:
        return scan.wan2_2
    shapes = [d for d in DITS.values() if d.num_layers == scan.blocks and d not in _WAN2_2_BY_PATCH.values()]
    if not shapes:
        return None
    vace = scan.vace_blocks > 0 and not (scan.blocks == _IMAGE_BEFORE_VACE and scan.i2v)
    image = scan.i2v and not vace
    flf = image and scan.flf and any(d.flf_pos_embed for d in shapes)
    return next((d for d in shapes if (d.vace, d.image_embedding, d.flf_pos_embed) == (vace, image, flf)), None)


def _identify_dit(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in accepted_prefixes("diffusion_model", "high_noise_diffusion_model"):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects original Wan names with no prefix "
                        f"or {COMPONENTS['diffusion_model'].load_prefix!r}")
    if p + "blocks.0.cross_attn.norm_k.weight" not in t:
        problems.append("no blocks.0.cross_attn.norm_k.weight: sd.cpp would not detect a Wan model")
    scan = _scan_dit(h, p)
    shape = _wan_runner_choice(scan)
    if shape is None:
        problems.append(f"{scan.blocks} transformer blocks: sd.cpp only runs Wan DiTs with "
                        f"{' or '.join(_block_count_names())} blocks and aborts the whole process (GGML_ABORT) "
                        "on any other count")
    found = _dit_file_values(h, p)
    values = found.hyper_parameters()
    if shape is not None:
        expected = _sdcpp_values(shape)
        for key, want in dataclasses.asdict(expected).items():
            got = getattr(values, key)
            if key != "num_heads" and got is not None and got != want:
                problems.append(f"{key} is {got} in the file but sd.cpp builds {shape.sdcpp_name} with {want}: "
                                "loading would fail with a shape mismatch")
        values = expected
        if found.text_dim not in (None, shape.text_dim):
            problems.append(f"text_embedding takes {found.text_dim} features; sd.cpp's Wan takes "
                            f"{shape.text_dim} (umt5-xxl)")
        missing = [i for i in range(scan.blocks) if p + f"blocks.{i}.self_attn.q.weight" not in t]
        if missing:
            problems.append(f"blocks {missing[:5]}{'...' if len(missing) > 5 else ''} are missing "
                            f"(sd.cpp expects blocks 0..{scan.blocks - 1})")
        if shape.vace:
            problems.extend(_vace_problems(t, p, scan))
    families = tuple(f.name for f in families_of(shape)) if shape is not None else ()
    return ModelKind(
        "dit", name=shape.sdcpp_name if shape is not None else None, family=families[0] if families else None,
        families=families, prefix=p, components=components, blocks=scan.blocks,
        patch_size=found.patch_size or (1, 2, 2), text_dim=found.text_dim, freq_dim=found.freq_dim,
        has_image_embedding=scan.has_img_emb, vace_blocks=scan.vace_blocks, problems=tuple(problems),
        dim=values.dim, ffn_dim=values.ffn_dim, num_heads=values.num_heads, in_channels=values.in_channels,
        out_channels=values.out_channels)


def _vace_problems(t: dict[str, TensorInfo], p: str, scan: _DitScan) -> list[str]:
    """What would crash sd.cpp's VACE DiT: WanRunner adds VACE block n after every
    (blocks // vace_blocks)-th block and reads vace_blocks.n without checking that it exists."""
    n = scan.vace_blocks
    if n > scan.blocks:
        return [f"{n} VACE blocks for {scan.blocks} blocks: sd.cpp's VACE layer mapping steps by "
                f"{scan.blocks} // {n} = 0 and never ends"]
    problems = []
    mapped = len(range(0, scan.blocks, scan.blocks // n))
    if mapped > n:
        problems.append(f"{n} VACE blocks for {scan.blocks} blocks: sd.cpp maps {mapped} VACE blocks (one every "
                        f"{scan.blocks // n} blocks) and would crash reading vace_blocks.{n}")
    missing = [i for i in range(n) if p + f"vace_blocks.{i}.self_attn.q.weight" not in t]
    if missing:
        problems.append(f"vace_blocks {missing[:5]}{'...' if len(missing) > 5 else ''} are missing "
                        f"(sd.cpp expects vace_blocks 0..{n - 1})")
    if p + "vace_patch_embedding.weight" not in t:
        problems.append("vace_patch_embedding.weight is missing (sd.cpp's VACE DiT needs it)")
    return problems


def _block_count_names() -> list[str]:
    """"30 (1.3B, 5B)", "40 (14B)": each block count sd.cpp runs and the model sizes it means."""
    out = []
    for n in _BLOCK_COUNTS:
        sizes = dict.fromkeys(d.key.rsplit("-", 1)[1].upper() for d in DITS.values() if d.num_layers == n)
        out.append(f"{n} ({', '.join(sizes)})")
    return out


@dataclass(frozen=True)
class _HyperParameters:
    """A DiT's hyper-parameters as ModelKind reports them (None: not in the file)."""

    dim: int | None
    ffn_dim: int | None
    num_heads: int | None
    in_channels: int | None
    out_channels: int | None


def _sdcpp_values(shape: DitShape) -> _HyperParameters:
    """The hyper-parameters sd.cpp hard-codes for this DiT (src/wan.hpp)."""
    return _HyperParameters(shape.dim, shape.ffn_dim, shape.num_heads, shape.in_dim, shape.out_dim)


@dataclass(frozen=True)
class _DitFileValues:
    """What a DiT file's shapes say (None where a tensor is missing)."""

    dim: int | None
    ffn_dim: int | None
    text_dim: int | None
    freq_dim: int | None
    in_channels: int | None
    out_channels: int | None
    patch_size: tuple[int, int, int] | None

    def hyper_parameters(self) -> _HyperParameters:
        return _HyperParameters(self.dim, self.ffn_dim, self.dim // 128 if self.dim else None, self.in_channels,
                                self.out_channels)


def _dit_file_values(h: ModelHeader, p: str) -> _DitFileValues:
    """The file's own shapes, to catch what sd.cpp would reject at load time."""
    t = h.tensors

    def dim0(key: str, axis: int = 0) -> int | None:
        info = t.get(p + key)
        return info.shape[axis] if info is not None and len(info.shape) > axis else None

    file_dim = dim0("text_embedding.0.weight") or dim0("patch_embedding.weight")
    head = dim0("head.head.weight")
    patch = t.get(p + "patch_embedding.weight")
    file_in = None
    patch_size: tuple[int, int, int] | None = None
    if patch is not None and len(patch.shape) == 5:
        file_in = patch.shape[1]
        patch_size = (patch.shape[2], patch.shape[3], patch.shape[4])
    elif patch is not None and file_dim:
        file_in = sdcpp_ne(patch, h.format)[3] // file_dim
    return _DitFileValues(file_dim, dim0("blocks.0.ffn.0.weight"), dim0("text_embedding.0.weight", 1),
                          dim0("time_embedding.0.weight", 1), file_in, head // 4 if head is not None else None,
                          patch_size)


# --- the other components ---------------------------------------------------------------------

def _identify_vae(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in accepted_prefixes("vae"):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects Wan VAE names with no prefix or "
                        f"{COMPONENTS['vae'].load_prefix!r}")
    conv1 = t.get(p + "decoder.conv1.weight")
    z_dim = conv1.shape[1] if conv1 is not None and len(conv1.shape) == 5 else None
    has_encoder = p + "encoder.conv1.weight" in t and p + "conv1.weight" in t
    vae = next((v for v in VAES.values() if v.z_dim == z_dim), None)
    if vae is None:
        known = " or ".join(f"{v.z_dim} (Wan{v.version})" for v in VAES.values())
        problems.append(f"decoder.conv1.weight is {list(conv1.shape) if conv1 else 'missing'}; a Wan VAE's "
                        f"is [out, {known}, 3, 3, 3]")
    if p + "decoder.head.2.weight" not in t:
        problems.append("decoder.head.2.weight is missing")
    return ModelKind("vae", name=vae.sdcpp_name if vae else None, family=vae.name if vae else None,
                     families=(vae.name,) if vae else (), prefix=p, components=components, z_dim=z_dim,
                     has_encoder=has_encoder, problems=tuple(problems))


def _count_layers(names: Iterable[str], stem: str) -> int:
    n = 0
    for name in names:
        if name.startswith(stem):
            n = max(n, _atoi(name[len(stem):]) + 1)
    return n


def _identify_text_encoder(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in accepted_prefixes("text_encoder"):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects T5 names with no prefix "
                        f"or {COMPONENTS['text_encoder'].load_prefix!r}")
    gguf_names = p + "enc.blk.0.attn_q.weight" in t
    if gguf_names:
        emb, blk, ffn_key = t.get(p + "token_embd.weight"), p + "enc.blk.", "ffn_up.weight"
        rel_key = "attn_rel_b.weight"
    else:
        emb, blk, ffn_key = t.get(p + "shared.weight"), p + "encoder.block.", "layer.1.DenseReluDense.wi_1.weight"
        rel_key = "layer.0.SelfAttention.relative_attention_bias.weight"

    def rel(i: int) -> str:
        return f"{blk}{i}.{rel_key}"

    layers = _count_layers(t, blk)
    vocab = emb.shape[0] if emb is not None and len(emb.shape) == 2 else None
    dim = emb.shape[1] if emb is not None and len(emb.shape) == 2 else None
    ffn = t.get(f"{blk}0.{ffn_key}")
    rel0 = t.get(rel(0))
    heads = rel0.shape[1] if rel0 is not None and len(rel0.shape) == 2 else None
    per_block_bias = layers > 1 and all(rel(i) in t for i in range(layers))
    if emb is None:
        problems.append("the token embedding (shared.weight / token_embd.weight) is missing")
    name = family = None
    if (vocab, dim, layers, heads) == _UMT5 and per_block_bias:
        name, family = "umt5-xxl", "umt5-xxl"
    elif vocab == 32128:
        problems.append("this is T5 (vocab 32128); sd.cpp's Wan conditioner is umt5-xxl "
                        f"(vocab {_T5.vocab_size}, a relative attention bias in every block)")
    else:
        problems.append(f"not umt5-xxl: vocab {vocab}, dim {dim}, {layers} layers, {heads} heads"
                        f"{'' if per_block_bias else ', no relative attention bias in every block'}")
    return ModelKind("text_encoder", name=name, family=family, families=(family,) if family else (), prefix=p,
                     components=components, blocks=layers, dim=dim,
                     ffn_dim=ffn.shape[0] if ffn is not None and ffn.shape else None, num_heads=heads,
                     vocab_size=vocab, problems=tuple(problems))


def _identify_clip_vision(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    t = h.tensors
    problems: list[str] = []
    if p not in accepted_prefixes("clip_vision"):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects Hugging Face CLIP names with no prefix")
    layers = _count_layers(t, p + "vision_model.encoder.layers.")
    patch = t.get(p + "vision_model.embeddings.patch_embedding.weight")
    hidden = patch.shape[0] if patch is not None and patch.shape else None
    fc1 = t.get(p + "vision_model.encoder.layers.0.mlp.fc1.weight")
    ffn = fc1.shape[0] if fc1 is not None and fc1.shape else None
    name = family = None
    if (hidden, layers, ffn) == _CLIP_VIT_H:
        name, family = "CLIP-ViT-H-14", "clip-vision-h"
    else:
        problems.append(f"not CLIP ViT-H/14 (hidden {hidden}, {layers} layers, ffn {ffn}); sd.cpp's Wan "
                        f"I2V uses ViT-H/14 ({_CLIP_VIT_H[0]}, {_CLIP_VIT_H[1]} layers, {_CLIP_VIT_H[2]})")
    if p + "visual_projection.weight" not in t:
        problems.append("visual_projection.weight is missing (sd.cpp's CLIP vision model needs it)")
    return ModelKind("clip_vision", name=name, family=family, families=(family,) if family else (), prefix=p,
                     components=components, blocks=layers, dim=hidden, ffn_dim=ffn,
                     num_heads=_CLIP.num_heads if name else None, problems=tuple(problems))


def _identify_tiny_vae(h: ModelHeader, p: str, components: tuple[str, ...]) -> ModelKind:
    """TAEHV (``wanpy.catalogue.TINY_VAES``): its latent channels (``decoder.1``'s input) and pixel
    channels (``decoder.22``'s output: 3, or 12 with Wan2.2's 2x2 patches) tell Wan2.1's from Wan2.2's."""
    from wanpy.layouts import taehv_layout

    t = h.tensors
    problems: list[str] = []
    if p not in accepted_prefixes("tiny_vae"):
        problems.append(f"tensor names start with {p!r}; sd.cpp expects TAEHV names with no prefix")
    first, last = t.get(p + "decoder.1.weight"), t.get(p + "decoder.22.weight")
    z_dim = first.shape[1] if first is not None and len(first.shape) == 4 else None
    pixels = last.shape[0] if last is not None and len(last.shape) == 4 else None
    tiny = next((v for v in TINY_VAES.values() if (v.z_dim, 3 * v.patch ** 2) == (z_dim, pixels)), None)
    if tiny is None:
        known = " or ".join(f"{v.z_dim} latent and {3 * v.patch ** 2} pixel channels ({v.name})"
                            for v in TINY_VAES.values())
        problems.append(f"a TAEHV of {z_dim} latent and {pixels} pixel channels; sd.cpp runs {known}")
    else:
        missing = [s.name for s in taehv_layout(tiny.name) if p + s.name not in t]
        if missing:
            problems.append(f"{len(missing)} TAEHV tensors are missing (e.g. {missing[0]}); sd.cpp's video mode "
                            "builds the encoder and the decoder")
    has_encoder = p + "encoder.0.weight" in t
    return ModelKind("tiny_vae", name=tiny.name if tiny else None, family=tiny.name if tiny else None,
                     families=(tiny.name,) if tiny else (), prefix=p, components=components, z_dim=z_dim,
                     has_encoder=has_encoder, problems=tuple(problems))
