"""The tensor tables of the real Wan model files, derived from sd.cpp's model code.

The pre-flight presets size them without any file; the model kit (``wanpy.testing``) writes them.

Every function returns ``TensorSpec``s in file order: the original (PyTorch state-dict)
names and row-major shapes that the published files use and that stable-diffusion.cpp
loads (``src/wan.hpp``, ``src/t5.hpp``, ``src/clip.hpp``), with the ggml type each
tensor gets and how to fill it with random values that keep activations finite:

- DiT (``blocks.N.self_attn.q.weight``, ``patch_embedding.weight`` [dim, in, 1, 2, 2], ...),
  as city96-style GGUF releases have it: no name prefix, Linear weights at the chosen
  type (``time_embedding`` kept F16 as those releases do), the 5-D patch embedding F16,
  biases, norms and modulations F32. Like every real Wan GGUF, the 5-D tensor makes
  ggml's GGUF reader log two errors ("invalid number of dimensions: 5 > 4", "failed to
  read tensor info"); sd.cpp then reads the file with its own reader and loads it.
- Wan2.1 / Wan2.2 VAE (``encoder.conv1.weight``, ``decoder.upsamples.3.time_conv.weight``,
  ``decoder.middle.1.to_qkv.weight``, RMS-norm ``gamma`` [C, 1, 1, 1] ...): conv weights F16.
- umt5-xxl with llama.cpp's T5 names (``enc.blk.N.attn_q.weight``, ``token_embd.weight``),
  as the umt5-xxl-encoder GGUF releases have them; sd.cpp maps them to T5 names.
- CLIP ViT-H/14 vision with Hugging Face names (``vision_model.encoder.layers.N...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wanpy.catalogue import CLIP_VISION, DITS, TEXT_ENCODER, TINY_VAES, DitShape

__all__ = [
    "TensorSpec", "DitShape", "DIT_CONFIGS", "QUANTIZED", "GGML_NAMES",
    "dit_layout", "vae_layout", "umt5_xxl_layout", "clip_vision_h_layout", "taehv_layout",
]

# wanpy dtype name -> ggml type name
GGML_NAMES = {
    "f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1",
    "q5_0": "Q5_0", "q5_1": "Q5_1", "q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K",
}
QUANTIZED = frozenset(GGML_NAMES) - {"f32", "f16", "bf16"}
# types ggml_get_rows handles; sd.cpp converts an Embedding of any other type to F32 on load
_GET_ROWS_TYPES = {"f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: name, row-major shape, ggml type name, and its random fill.

    ``init`` is "uniform" (values ~ U(-scale, scale)), "ones" or "zeros".
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    init: str = "uniform"
    scale: float = 0.0

    @property
    def nelements(self) -> int:
        return math.prod(self.shape)


def _lecun(fan_in: int) -> float:
    """U(-a, a) with variance 1/fan_in: activations keep their scale through a layer."""
    return math.sqrt(3.0 / fan_in)


_BIAS_SCALE = 0.01


# The DiT shapes the model kit and the pre-flight presets write, by catalogue key.
DIT_CONFIGS: dict[str, DitShape] = {d.key: d for d in DITS.values()}


class _Builder:
    def __init__(self, dtype: str, conv_type: str = "F16") -> None:
        if dtype not in GGML_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(GGML_NAMES)}")
        self.weight_type = GGML_NAMES[dtype]
        self.conv_type = conv_type
        self.specs: list[TensorSpec] = []

    def add(self, name: str, shape: tuple[int, ...], ggml_type: str, init: str = "uniform",
            scale: float = 0.0) -> None:
        self.specs.append(TensorSpec(name, tuple(int(d) for d in shape), ggml_type, init, scale))

    def linear(self, name: str, n_in: int, n_out: int, *, bias: bool = True, ggml_type: str | None = None) -> None:
        self.add(f"{name}.weight", (n_out, n_in), ggml_type or self.weight_type, "uniform", _lecun(n_in))
        if bias:
            self.add(f"{name}.bias", (n_out,), "F32", "uniform", _BIAS_SCALE)

    def conv(self, name: str, n_in: int, n_out: int, kernel: tuple[int, ...], *, bias: bool = True) -> None:
        self.add(f"{name}.weight", (n_out, n_in, *kernel), self.conv_type, "uniform",
                 _lecun(n_in * math.prod(kernel)))
        if bias:
            self.add(f"{name}.bias", (n_out,), "F32", "uniform", _BIAS_SCALE)

    def norm(self, name: str, dim: int, *, bias: bool = False, suffix: str = "weight",
             shape: tuple[int, ...] | None = None) -> None:
        self.add(f"{name}.{suffix}", shape or (dim,), "F32", "ones")
        if bias:
            self.add(f"{name}.bias", shape or (dim,), "F32", "zeros")


def dit_layout(config: DitShape, dtype: str) -> list[TensorSpec]:
    """The tensors of a Wan DiT, in the order of the original state dict."""
    c = config
    b = _Builder(dtype)
    quantized = dtype in QUANTIZED
    b.conv("patch_embedding", c.in_dim, c.dim, c.patch_size)
    b.linear("text_embedding.0", c.text_dim, c.dim)
    b.linear("text_embedding.2", c.dim, c.dim)
    # city96's quantizer keeps time_embedding in F16
    b.linear("time_embedding.0", c.freq_dim, c.dim, ggml_type="F16" if quantized else None)
    b.linear("time_embedding.2", c.dim, c.dim, ggml_type="F16" if quantized else None)
    b.linear("time_projection.1", c.dim, 6 * c.dim)
    for i in range(c.num_layers):
        _dit_block(b, f"blocks.{i}.", c)
    b.add("head.modulation", (1, 2, c.dim), "F32", "uniform", _lecun(c.dim))
    b.linear("head.head", c.dim, c.out_dim * math.prod(c.patch_size))
    if c.image_embedding:
        if c.flf_pos_embed:
            b.add("img_emb.emb_pos", (1, 514, 1280), "F32", "uniform", _lecun(1280))
        b.norm("img_emb.proj.0", 1280, bias=True)
        b.linear("img_emb.proj.1", 1280, 1280)
        b.linear("img_emb.proj.3", 1280, c.dim)
        b.norm("img_emb.proj.4", c.dim, bias=True)
    # VACE (src/wan.hpp VaceWanAttentionBlock): a block of the same shape, the first with
    # before_proj, each with after_proj, and the control video's patch embedding
    for i in range(c.vace_blocks):
        p = f"vace_blocks.{i}."
        _dit_block(b, p, c)
        if i == 0:
            b.linear(p + "before_proj", c.dim, c.dim)
        b.linear(p + "after_proj", c.dim, c.dim)
    if c.vace_blocks:
        b.conv("vace_patch_embedding", c.vace_in_dim, c.dim, c.patch_size)
    return b.specs


def _dit_block(b: _Builder, p: str, c: DitShape) -> None:
    """One transformer block's tensors (``blocks.N.`` or ``vace_blocks.N.``)."""
    b.add(p + "modulation", (1, 6, c.dim), "F32", "uniform", _lecun(c.dim))
    for attn in ("self_attn", "cross_attn"):
        for proj in ("q", "k", "v", "o"):
            b.linear(f"{p}{attn}.{proj}", c.dim, c.dim)
        b.norm(f"{p}{attn}.norm_q", c.dim)
        b.norm(f"{p}{attn}.norm_k", c.dim)
        if attn == "self_attn":
            b.norm(p + "norm3", c.dim, bias=True)  # cross_attn_norm=True: affine LayerNorm
        elif c.image_embedding:
            b.linear(p + "cross_attn.k_img", c.dim, c.dim)
            b.linear(p + "cross_attn.v_img", c.dim, c.dim)
            b.norm(p + "cross_attn.norm_k_img", c.dim)
    b.linear(p + "ffn.0", c.dim, c.ffn_dim)
    b.linear(p + "ffn.2", c.ffn_dim, c.dim)


# --- VAE (src/wan.hpp WanVAE, Encoder3d, Decoder3d; Wan's vae.py / vae2_2.py) ---------------

def _residual(b: _Builder, p: str, n_in: int, n_out: int) -> None:
    b.norm(p + "residual.0", n_in, suffix="gamma", shape=(n_in, 1, 1, 1))
    b.conv(p + "residual.2", n_in, n_out, (3, 3, 3))
    b.norm(p + "residual.3", n_out, suffix="gamma", shape=(n_out, 1, 1, 1))
    b.conv(p + "residual.6", n_out, n_out, (3, 3, 3))
    if n_in != n_out:
        b.conv(p + "shortcut", n_in, n_out, (1, 1, 1))


def _attention(b: _Builder, p: str, dim: int) -> None:
    b.norm(p + "norm", dim, suffix="gamma", shape=(dim, 1, 1))
    b.conv(p + "to_qkv", dim, dim * 3, (1, 1))
    b.conv(p + "proj", dim, dim, (1, 1))


def _resample(b: _Builder, p: str, dim: int, mode: str, wan2_2: bool) -> None:
    if mode.startswith("upsample"):
        b.conv(p + "resample.1", dim, dim if wan2_2 else dim // 2, (3, 3))
        if mode == "upsample3d":
            b.conv(p + "time_conv", dim, dim * 2, (3, 1, 1))
    else:
        b.conv(p + "resample.1", dim, dim, (3, 3))
        if mode == "downsample3d":
            b.conv(p + "time_conv", dim, dim, (3, 1, 1))


def _middle(b: _Builder, p: str, dim: int) -> None:
    _residual(b, p + "middle.0.", dim, dim)
    _attention(b, p + "middle.1.", dim)
    _residual(b, p + "middle.2.", dim, dim)


def vae_layout(version: str = "2.1") -> list[TensorSpec]:
    """The Wan VAE (encoder and decoder), "2.1" (z_dim 16) or "2.2" (z_dim 48), conv weights F16."""
    if version not in ("2.1", "2.2"):
        raise ValueError(f"unknown Wan VAE version {version!r}; known: '2.1', '2.2'")
    wan2_2 = version == "2.2"
    dim, dec_dim, z_dim = (160, 256, 48) if wan2_2 else (96, 96, 16)
    mult, n_res = (1, 2, 4, 4), 2
    t_down, t_up = (False, True, True), (True, True, False)
    b = _Builder("f16")

    # encoder
    dims = [dim] + [dim * u for u in mult]
    b.conv("encoder.conv1", 12 if wan2_2 else 3, dims[0], (3, 3, 3))
    index = 0
    for i in range(len(mult)):
        n_in, n_out = dims[i], dims[i + 1]
        if wan2_2:
            p = f"encoder.downsamples.{index}."
            index += 1
            for j in range(n_res):
                _residual(b, f"{p}downsamples.{j}.", n_in, n_out)
                n_in = n_out
            if i != len(mult) - 1:
                _resample(b, f"{p}downsamples.{n_res}.", n_out, "downsample3d" if t_down[i] else "downsample2d", True)
        else:
            for _ in range(n_res):
                _residual(b, f"encoder.downsamples.{index}.", n_in, n_out)
                index += 1
                n_in = n_out
            if i != len(mult) - 1:
                _resample(b, f"encoder.downsamples.{index}.", n_out,
                          "downsample3d" if t_down[i] else "downsample2d", False)
                index += 1
    top = dims[-1]
    _middle(b, "encoder.", top)
    b.norm("encoder.head.0", top, suffix="gamma", shape=(top, 1, 1, 1))
    b.conv("encoder.head.2", top, z_dim * 2, (3, 3, 3))
    b.conv("conv1", z_dim * 2, z_dim * 2, (1, 1, 1))
    b.conv("conv2", z_dim, z_dim, (1, 1, 1))

    # decoder
    dims = [dec_dim * mult[-1]] + [dec_dim * u for u in reversed(mult)]
    b.conv("decoder.conv1", z_dim, dims[0], (3, 3, 3))
    _middle(b, "decoder.", dims[0])
    index = 0
    for i in range(len(mult)):
        n_in, n_out = dims[i], dims[i + 1]
        if wan2_2:
            p = f"decoder.upsamples.{index}."
            index += 1
            for j in range(n_res + 1):
                _residual(b, f"{p}upsamples.{j}.", n_in, n_out)
                n_in = n_out
            if i != len(mult) - 1:
                _resample(b, f"{p}upsamples.{n_res + 1}.", n_out, "upsample3d" if t_up[i] else "upsample2d", True)
        else:
            if i in (1, 2, 3):
                n_in //= 2
            for _ in range(n_res + 1):
                _residual(b, f"decoder.upsamples.{index}.", n_in, n_out)
                index += 1
                n_in = n_out
            if i != len(mult) - 1:
                _resample(b, f"decoder.upsamples.{index}.", n_out, "upsample3d" if t_up[i] else "upsample2d", False)
                index += 1
    out = dims[-1]
    b.norm("decoder.head.0", out, suffix="gamma", shape=(out, 1, 1, 1))
    b.conv("decoder.head.2", out, 12 if wan2_2 else 3, (3, 3, 3))
    return b.specs


# --- umt5-xxl (src/t5.hpp with is_umt5; llama.cpp's T5 tensor names) -----------------------

def umt5_xxl_layout(dtype: str) -> list[TensorSpec]:
    """umt5-xxl's encoder as llama.cpp names it: 24 blocks, d_model 4096, d_ff 10240, 64 heads."""
    t = TEXT_ENCODER
    layers, dim, ffn, heads, vocab = t.num_layers, t.dim, t.ffn_dim, t.num_heads, t.vocab_size
    b = _Builder(dtype)
    emb_type = GGML_NAMES[dtype] if dtype in _GET_ROWS_TYPES or dtype == "f32" else "F16"
    b.add("token_embd.weight", (vocab, dim), emb_type, "uniform", math.sqrt(3.0))
    for i in range(layers):
        p = f"enc.blk.{i}."
        b.norm(p + "attn_norm", dim)
        b.linear(p + "attn_q", dim, dim, bias=False)
        b.linear(p + "attn_k", dim, dim, bias=False)
        b.linear(p + "attn_v", dim, dim, bias=False)
        b.linear(p + "attn_o", dim, dim, bias=False)
        b.add(p + "attn_rel_b.weight", (32, heads), "F32", "uniform", 0.1)  # llama.cpp never quantizes it
        b.norm(p + "ffn_norm", dim)
        b.linear(p + "ffn_gate", dim, ffn, bias=False)
        b.linear(p + "ffn_up", dim, ffn, bias=False)
        b.linear(p + "ffn_down", ffn, dim, bias=False)
    b.norm("enc.output_norm", dim)
    return b.specs


# --- CLIP ViT-H/14 vision (src/clip.hpp CLIPVisionModelProjection; Hugging Face names) -------

def clip_vision_h_layout() -> list[TensorSpec]:
    """CLIP ViT-H/14's vision tower and projection, F16 weights (as ``clip_vision_h.safetensors``)."""
    c = CLIP_VISION
    hidden, ffn, layers, patch, positions, proj = c.hidden, c.ffn_dim, c.num_layers, c.patch_size, c.tokens, \
        c.projection_dim
    b = _Builder("f16")
    b.add("vision_model.embeddings.class_embedding", (hidden,), "F32", "uniform", _lecun(hidden))
    b.conv("vision_model.embeddings.patch_embedding", 3, hidden, (patch, patch), bias=False)
    b.add("vision_model.embeddings.position_embedding.weight", (positions, hidden), "F16", "uniform",
          _lecun(hidden))
    b.norm("vision_model.pre_layrnorm", hidden, bias=True)  # sic: Hugging Face's spelling
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}."
        for proj_name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            b.linear(f"{p}self_attn.{proj_name}", hidden, hidden)
        b.norm(p + "layer_norm1", hidden, bias=True)
        b.linear(p + "mlp.fc1", hidden, ffn)
        b.linear(p + "mlp.fc2", ffn, hidden)
        b.norm(p + "layer_norm2", hidden, bias=True)
    b.norm("vision_model.post_layernorm", hidden, bias=True)
    b.linear("visual_projection", hidden, proj, bias=False)
    return b.specs


# --- TAEHV, the tiny video autoencoder (src/tae.hpp TinyVideoEncoder / TinyVideoDecoder) ---------------

def _mem_block(b: _Builder, p: str, channels: int) -> None:
    """MemBlock(c, c): three 3x3 convolutions over the frame and its predecessor (2c in)."""
    b.conv(p + "conv.0", 2 * channels, channels, (3, 3))
    b.conv(p + "conv.2", channels, channels, (3, 3))
    b.conv(p + "conv.4", channels, channels, (3, 3))


def taehv_layout(name: str = "taehv-wan2.1") -> list[TensorSpec]:
    """A TAEHV (``wanpy.catalogue.TINY_VAES``): encoder and decoder as madebyollin/taehv's
    ``taew2_1.safetensors`` names them (``decoder.3.conv.0.weight``, ...), the indices of the
    PyTorch ``nn.Sequential`` (activations and resampling take an index and no tensor); sd.cpp
    makes every convolution weight F16 and every bias F32."""
    if name not in TINY_VAES:
        raise ValueError(f"unknown tiny VAE {name!r}; known: {', '.join(TINY_VAES)}")
    t = TINY_VAES[name]
    pixels = 3 * t.patch * t.patch
    b = _Builder("f16")
    hidden = 64
    b.conv("encoder.0", pixels, hidden, (3, 3))  # 1: ReLU
    index = 2
    for i in range(3):
        stride = 1 if i == 2 else 2
        b.conv(f"encoder.{index}.conv", hidden * stride, hidden, (1, 1), bias=False)  # TPool
        b.conv(f"encoder.{index + 1}", hidden, hidden, (3, 3), bias=False)  # stride 2
        index += 2
        for _ in range(3):
            _mem_block(b, f"encoder.{index}.", hidden)
            index += 1
    b.conv(f"encoder.{index}", hidden, t.z_dim, (3, 3))
    channels = (256, 128, 64, 64)
    b.conv("decoder.1", t.z_dim, channels[0], (3, 3))  # 0: clamp, 2: ReLU
    index = 3
    for i in range(3):
        c, stride = channels[i], 1 if i == 0 else 2
        for _ in range(3):
            _mem_block(b, f"decoder.{index}.", c)
            index += 1
        index += 1  # Upsample
        b.conv(f"decoder.{index}.conv", c, c * stride, (1, 1), bias=False)  # TGrow
        b.conv(f"decoder.{index + 1}", c, channels[i + 1], (3, 3), bias=False)
        index += 2
    b.conv(f"decoder.{index + 1}", channels[3], pixels, (3, 3))  # index: ReLU
    return b.specs
