"""The Wan catalogue: every fact wanpy knows about a Wan model, in one record per model.

- ``DitShape``: a Wan DiT as sd.cpp builds it (``src/wan.hpp`` ``WanRunner`` hard-codes the
  hyper-parameters by block count; ``src/model.cpp`` tells the versions apart).
- ``VaeShape``: the Wan2.1 and Wan2.2 VAEs (latent channels, compression, longest clips).
- ``WanFamily``: a published model (a DiT, its VAE, the images it takes, whether it has two
  experts, the defaults of its reference configuration).
- ``COMPONENTS``: the model files a pipeline takes and the tensor-name prefixes sd.cpp uses.

Validation, the pre-flight, model identification, LoRA checks and the model kit all read
these records. Adding a family is one ``WanFamily`` (and, for a new architecture, one
``DitShape``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CLIP_VISION", "TEXT_ENCODER", "TINY_VAES", "TinyVaeShape", "ClipVisionShape", "TextEncoderShape", "COMPONENTS", "DITS", "FAMILIES", "PRESET_ALIASES", "VAES", "Component", "DitShape", "ImageMode",
    "PublishedDefaults", "VaeShape", "WanFamily", "DEFAULT_SAMPLE_METHOD", "DEFAULT_SCHEDULER", "dit_by_key",
    "families_of", "family", "preset_family",
]

ImageMode = Literal["none", "optional", "init", "init_end"]

# The sampler every published Wan configuration uses (flow matching, Euler).
DEFAULT_SAMPLE_METHOD = "euler"
DEFAULT_SCHEDULER = "discrete"  # sd.cpp's own default for Euler on flow models


@dataclass(frozen=True)
class VaeShape:
    """A Wan VAE: ``z_dim`` latent channels, ``spatial_scale`` pixels per latent pixel,
    4x temporal compression. ``longest_decode``/``longest_encode``: the most frames sd.cpp can
    build its graphs for; beyond them the graph outgrows ggml's compute context and
    GGML_ASSERT(obj_new) aborts the process (measured on the pinned sd.cpp with the pre-flight,
    which builds the same graphs; independent of size, tiling and flash attention)."""

    name: str  # wanpy's component family, e.g. "wan2.1-vae"
    sdcpp_name: str
    version: str  # "2.1" or "2.2": the kit's and the presets' key
    z_dim: int
    spatial_scale: int
    longest_decode: int
    longest_encode: int = 201


VAES: dict[str, VaeShape] = {v.name: v for v in (
    VaeShape("wan2.1-vae", "Wan2.1-VAE", "2.1", z_dim=16, spatial_scale=8, longest_decode=689),
    VaeShape("wan2.2-vae", "Wan2.2-VAE", "2.2", z_dim=48, spatial_scale=16, longest_decode=657),
)}


@dataclass(frozen=True)
class TinyVaeShape:
    """TAEHV, the tiny video autoencoder sd.cpp runs for Wan instead of a VAE (``src/tae.hpp``, the
    ``taesd_path`` model): it reads and writes the latents of ``vae``, ``z_dim`` channels, folding
    ``patch`` x ``patch`` pixels into channels (Wan2.2's 16x compression). ``published`` names the
    file its authors publish (madebyollin/taehv)."""

    name: str
    vae: str  # the VaeShape whose latents it decodes
    z_dim: int
    patch: int
    published: str


TINY_VAES: dict[str, TinyVaeShape] = {t.name: t for t in (
    TinyVaeShape("taehv-wan2.1", "wan2.1-vae", z_dim=16, patch=1, published="taew2_1.safetensors"),
    TinyVaeShape("taehv-wan2.2", "wan2.2-vae", z_dim=48, patch=2, published="taew2_2.safetensors"),
)}


@dataclass(frozen=True)
class DitShape:
    """One Wan DiT's architecture (``wanpy.layouts.dit_layout`` writes its tensors). For the
    shapes sd.cpp builds (``DITS``), ``key`` names it in the model kit and the pre-flight
    presets and ``sdcpp_name`` is what sd.cpp logs and identification reports."""

    num_layers: int
    dim: int
    ffn_dim: int
    in_dim: int
    out_dim: int
    image_embedding: bool = False  # Wan2.1 I2V / FLF2V: img_emb + k_img/v_img (CLIP vision input)
    flf_pos_embed: bool = False  # Wan2.1 FLF2V: img_emb.emb_pos (two CLIP images)
    vace_blocks: int = 0  # VACE: blocks that read the control video, added after every (layers / vace) block
    text_dim: int = 4096  # umt5-xxl
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    key: str = ""  # "" for shapes made up by tests
    sdcpp_name: str = ""

    @property
    def num_heads(self) -> int:
        return self.dim // 128

    @property
    def vae(self) -> VaeShape:
        """The VAE whose latents this DiT denoises."""
        return next(v for v in VAES.values() if v.z_dim == self.out_dim)

    @property
    def vace(self) -> bool:
        """A VACE DiT: it takes a control video (and optionally a reference image)."""
        return self.vace_blocks > 0

    @property
    def vace_in_dim(self) -> int:
        """The VACE context's channels (src/wan.hpp ``vace_in_dim``): the control video's two VAE
        encodings (inactive, reactive) and the mask folded to latent resolution."""
        return 2 * self.vae.z_dim + self.vae.spatial_scale ** 2

    @property
    def image_as_first_latent(self) -> bool:
        """sd.cpp's Wan2.2 TI2V handling: an image is VAE-encoded alone as the first latent
        frame, and every latent frame gets its own timestep (the DiT patchifies the Wan2.2
        VAE's 48 channels in and out)."""
        return self.in_dim == self.out_dim == VAES["wan2.2-vae"].z_dim

    @property
    def encodes_whole_clip(self) -> bool:
        """Image-to-video conditioning: sd.cpp VAE-encodes the whole clip (the given frames,
        grey elsewhere) and concatenates it to the latents (36 input channels)."""
        return self.in_dim == 36

    @property
    def uses_vae_encoder(self) -> bool:
        """Whether sd.cpp may VAE-encode for this DiT: image-to-video (the whole clip), TI2V (an
        init image as the first latent) and VACE (the control video, always). Text-to-video never
        encodes, so its VAE loads without the encoder (sd.cpp's ``vae_decode_only``)."""
        return self.encodes_whole_clip or self.image_as_first_latent or self.vace

    @property
    def clip_images(self) -> int:
        """CLIP vision embeddings the DiT takes: FLF2V two, Wan2.1 I2V one, others none."""
        return 2 if self.flf_pos_embed else 1 if self.image_embedding else 0

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (VAE compression x patch size);
        sd.cpp silently rounds other sizes up."""
        return self.vae.spatial_scale * self.patch_size[1]

    @property
    def longest_clip(self) -> int:
        """The most frames sd.cpp can build this DiT's VAE graphs for (see ``VaeShape``)."""
        return self.vae.longest_encode if self.encodes_whole_clip else self.vae.longest_decode

    def tokens(self, width: int, height: int, num_frames: int) -> int:
        """The DiT's sequence length for a video: latent pixels / patch, latent frames."""
        s = self.vae.spatial_scale
        return (width // s // self.patch_size[1]) * (height // s // self.patch_size[2]) * ((num_frames - 1) // 4 + 1)


DITS: dict[str, DitShape] = {d.sdcpp_name: d for d in (
    DitShape(30, 1536, 8960, 16, 16, key="wan2.1-t2v-1.3b", sdcpp_name="Wan2.1-T2V-1.3B"),
    DitShape(30, 1536, 8960, 36, 16, image_embedding=True, key="wan2.1-i2v-1.3b", sdcpp_name="Wan2.1-I2V-1.3B"),
    DitShape(30, 1536, 8960, 16, 16, vace_blocks=15, key="wan2.1-vace-1.3b", sdcpp_name="Wan2.1-VACE-1.3B"),
    DitShape(30, 3072, 14336, 48, 48, key="wan2.2-ti2v-5b", sdcpp_name="Wan2.2-TI2V-5B"),
    DitShape(40, 5120, 13824, 16, 16, key="wan2.x-t2v-14b", sdcpp_name="Wan2.x-T2V-14B"),
    DitShape(40, 5120, 13824, 16, 16, vace_blocks=8, key="wan2.x-vace-14b", sdcpp_name="Wan2.x-VACE-14B"),
    DitShape(40, 5120, 13824, 36, 16, key="wan2.2-i2v-14b", sdcpp_name="Wan2.2-I2V-14B"),  # each Wan2.2 I2V-A14B expert
    DitShape(40, 5120, 13824, 36, 16, image_embedding=True, key="wan2.1-i2v-14b", sdcpp_name="Wan2.1-I2V-14B"),
    DitShape(40, 5120, 13824, 36, 16, image_embedding=True, flf_pos_embed=True, key="wan2.1-flf2v-14b", sdcpp_name="Wan2.1-FLF2V-14B"),
)}


def dit_by_key(key: str) -> DitShape:
    for d in DITS.values():
        if d.key == key:
            return d
    raise ValueError(f"unknown Wan DiT {key!r}; known: {', '.join(d.key for d in DITS.values())}")


@dataclass(frozen=True)
class TextEncoderShape:
    """umt5-xxl as sd.cpp hard-codes it (``src/t5.hpp``): ``tokens`` is the context it
    encodes a prompt to; without a text encoder sd.cpp uses a zero context of
    ``empty_context_tokens``."""

    name: str
    vocab_size: int
    dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    tokens: int
    empty_context_tokens: int


@dataclass(frozen=True)
class ClipVisionShape:
    """CLIP ViT-H/14 as sd.cpp hard-codes it (``src/clip.hpp``): ``tokens`` per image of
    ``dim`` features reach the DiT."""

    name: str
    hidden: int
    num_layers: int
    ffn_dim: int
    num_heads: int
    patch_size: int
    tokens: int  # (224 / patch)^2 + the class token
    dim: int
    projection_dim: int


TEXT_ENCODER = TextEncoderShape("umt5-xxl", vocab_size=256384, dim=4096, ffn_dim=10240, num_layers=24, num_heads=64,
                                tokens=512, empty_context_tokens=256)
CLIP_VISION = ClipVisionShape("clip-vision-h", hidden=1280, num_layers=32, ffn_dim=5120, num_heads=16, patch_size=14,
                              tokens=257, dim=1280, projection_dim=1024)


@dataclass(frozen=True)
class PublishedDefaults:
    """The reference configuration's values (Wan2.1 / Wan2.2 ``generate.py``)."""

    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    cfg_scale: float
    flow_shift: float
    high_noise_cfg_scale: float | None = None  # Wan2.2 A14B
    moe_boundary: float = 0.875  # Wan2.2 A14B: the timestep fraction where the experts switch


@dataclass(frozen=True)
class WanFamily:
    """A published Wan model: its DiT, the images it takes, whether it has two experts
    (Wan2.2 A14B: high-noise and low-noise), and its published defaults."""

    name: str
    dit: DitShape
    images: ImageMode  # which of init_image / end_image it takes
    defaults: PublishedDefaults
    two_experts: bool = False

    @property
    def vae(self) -> VaeShape:
        return self.dit.vae

    @property
    def size_multiple(self) -> int:
        return self.dit.size_multiple

    @property
    def longest_clip(self) -> int:
        return self.dit.longest_clip

    @property
    def needs_clip_vision(self) -> bool:
        return self.dit.clip_images > 0

    @property
    def vace(self) -> bool:
        """Takes ``control_video``, ``vace_strength`` and a ``reference_image`` (Wan VACE)."""
        return self.dit.vace

    def __str__(self) -> str:
        return self.name


def _family(name: str, dit: str, images: ImageMode, *defaults: float, two_experts: bool = False,
            high_noise_cfg_scale: float | None = None, moe_boundary: float = 0.875) -> WanFamily:
    w, h, n, fps, steps, cfg, shift = defaults
    return WanFamily(name, DITS[dit], images,
                     PublishedDefaults(int(w), int(h), int(n), int(fps), int(steps), cfg, shift,
                                       high_noise_cfg_scale, moe_boundary), two_experts)


FAMILIES: dict[str, WanFamily] = {f.name: f for f in (
    _family("wan2.1-t2v-1.3b", "Wan2.1-T2V-1.3B", "none", 832, 480, 81, 16, 50, 5.0, 5.0),
    _family("wan2.1-t2v-14b", "Wan2.x-T2V-14B", "none", 1280, 720, 81, 16, 50, 5.0, 5.0),
    _family("wan2.1-i2v-14b", "Wan2.1-I2V-14B", "init", 832, 480, 81, 16, 40, 5.0, 3.0),
    _family("wan2.1-flf2v-14b", "Wan2.1-FLF2V-14B", "init_end", 1280, 720, 81, 16, 50, 5.0, 16.0),
    _family("wan2.2-ti2v-5b", "Wan2.2-TI2V-5B", "optional", 1280, 704, 121, 24, 50, 5.0, 5.0),
    _family("wan2.2-t2v-a14b", "Wan2.x-T2V-14B", "none", 1280, 720, 81, 16, 40, 3.0, 12.0, two_experts=True,
            high_noise_cfg_scale=4.0, moe_boundary=0.875),
    _family("wan2.2-i2v-a14b", "Wan2.2-I2V-14B", "init", 1280, 720, 81, 16, 40, 3.5, 5.0, two_experts=True,
            high_noise_cfg_scale=3.5, moe_boundary=0.900),
    # Wan2.1 generate.py: VACE samples 50 steps with shift 16
    _family("wan2.1-vace-1.3b", "Wan2.1-VACE-1.3B", "none", 832, 480, 81, 16, 50, 5.0, 16.0),
    _family("wan2.1-vace-14b", "Wan2.x-VACE-14B", "none", 1280, 720, 81, 16, 50, 5.0, 16.0),
    # Wan2.2-VACE-Fun-A14B (VideoX-Fun): both experts carry VACE blocks; it publishes no generate.py
    # of Wan's, so the defaults are those of Wan2.2 T2V-A14B, which it extends
    _family("wan2.2-vace-fun-a14b", "Wan2.x-VACE-14B", "none", 1280, 720, 81, 16, 40, 3.0, 12.0, two_experts=True,
            high_noise_cfg_scale=4.0, moe_boundary=0.875),
)}

# Preset names that are not family names: a 40-block T2V DiT is Wan2.1-T2V-14B or either
# expert of Wan2.2-T2V-A14B (the tensors are the same).
PRESET_ALIASES = {"wan2.x-t2v-14b": "wan2.1-t2v-14b"}


def family(name: str | WanFamily) -> WanFamily:
    """The family of that name (or preset alias)."""
    if isinstance(name, WanFamily):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a Wan family must be a name or a wanpy.WanFamily, got {type(name).__name__}")
    key = name.strip().lower()
    try:
        return FAMILIES[PRESET_ALIASES.get(key, key)]
    except KeyError:
        raise ValueError(f"unknown Wan model family {name!r}; known: "
                         f"{', '.join([*FAMILIES, *PRESET_ALIASES])}") from None


def preset_family(name: str) -> WanFamily | None:
    """The family a pre-flight preset name stands for, None when it names none."""
    key = name.strip().lower()
    found = FAMILIES.get(PRESET_ALIASES.get(key, key))
    return found


def families_of(dit: DitShape) -> tuple[WanFamily, ...]:
    """Every family a DiT of this shape can belong to (single-expert ones first)."""
    return tuple(sorted((f for f in FAMILIES.values() if f.dit is dit), key=lambda f: f.two_experts))


@dataclass(frozen=True)
class Component:
    """A model file a pipeline takes, and how sd.cpp names its tensors.

    ``load_prefix``: what sd.cpp prepends to the file's tensor names when it loads it
    (``src/stable-diffusion.cpp``; names already carrying it are kept). ``graph_prefix``: the
    names in sd.cpp's graphs after its name conversion (``vae.`` becomes ``first_stage_model.``).
    ``file_prefixes``: the prefixes real files carry ("" = the original names)."""

    argument: str
    load_prefix: str
    graph_prefix: str
    file_prefixes: tuple[str, ...]


COMPONENTS: dict[str, Component] = {c.argument: c for c in (
    Component("diffusion_model", "model.diffusion_model.", "model.diffusion_model.",
              ("", "model.diffusion_model.")),
    Component("high_noise_diffusion_model", "model.high_noise_diffusion_model.",
              "model.high_noise_diffusion_model.", ("", "model.high_noise_diffusion_model.")),
    Component("vae", "vae.", "first_stage_model.", ("", "vae.")),
    Component("text_encoder", "text_encoders.t5xxl.transformer.", "text_encoders.t5xxl.transformer.",
              ("", "text_encoders.t5xxl.transformer.")),
    Component("clip_vision", "cond_stage_model.transformer.", "cond_stage_model.transformer.",
              ("", "cond_stage_model.transformer.")),
    Component("tiny_vae", "tae.", "tae.", ("", "tae.")),
)}
