"""One configuration measured: every allocation and every phase's device memory.

``measure`` asks the session's runners (sd.cpp's own classes) to build each phase's graph
for the request's shape and sizes it with ggml's allocator in measure-only mode; weights
are sized by ggml's weight allocator. ``evaluate`` adds the verdict against the target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wanpy import system
from wanpy.catalogue import CLIP_VISION, COMPONENTS, DITS, TEXT_ENCODER, DitShape
from wanpy.errors import ModelFileError
from wanpy.memory.report import Allocation, PhaseTotal
from wanpy.memory.target import Target
from wanpy.units import format_bytes

__all__ = ["Config", "Evaluation", "Measurement", "evaluate", "host_video_bytes", "measure", "smallest_budget"]

_TILE_ENCODE_FACTOR = 1.30539  # sd.cpp's VAE::get_tile_sizes for encoding


@dataclass(frozen=True)
class Config:
    """The request and the memory settings one measurement is for."""

    width: int
    height: int
    num_frames: int
    flash_attention: bool
    vae_tiling: bool
    offload_to_cpu: bool
    keep_vae_on_cpu: bool
    init_image: bool
    end_image: bool
    tile_size: tuple[int, int] | None
    tile_overlap: float
    preview_vae: bool = False  # VAE previews decode while the DiT samples: both compute buffers at once
    vae_conv_direct: bool = False  # the VAE's Conv2d as ggml_conv_2d_direct (no im2col buffers)
    tiny_vae: str | None = None  # a TAEHV's use: "decode" (instead of the VAE) or "preview" (previews only)
    max_vram: int | None = None  # sd.cpp's graph-cut budget (bytes; with offload_to_cpu on a GPU)
    cache_copies: int = 0  # f32 arrays the size of the latent a step cache holds while sampling (host memory)
    high_noise_cache_copies: int = 0  # ... during Wan2.2 A14B's high-noise pass (its own cfg)


@dataclass(frozen=True)
class Measurement:
    """Every allocation and phase total, the DiT's sd.cpp name, and a host-memory problem
    (then the graphs were not measured)."""

    allocations: tuple[Allocation, ...]
    phases: tuple[PhaseTotal, ...]
    desc: str
    host_problem: str | None = None
    budget_problems: tuple[str, ...] = ()  # max_vram below a graph's largest segment
    max_vram_floor: int | None = None  # with max_vram: the smallest budget sd.cpp can plan every graph with
    max_vram_floor_component: str | None = None  # whose graph sets it


@dataclass(frozen=True)
class Evaluation:
    """A measurement judged against the target: ``fits``, the ``largest`` device allocation,
    the ``peak`` of device memory and the ``problems``."""

    fits: bool
    largest: Allocation
    allocations: tuple[Allocation, ...]
    phases: tuple[PhaseTotal, ...]
    peak: int
    problems: tuple[str, ...]
    desc: str
    max_vram_floor: int | None = None
    max_vram_floor_component: str | None = None


@dataclass(frozen=True)
class _Graph:
    """One measured graph: when it runs, whose it is, and what ggml sized."""

    phase: str
    component: str
    measured: dict[str, Any]
    tokens: int = 0  # a DiT graph's video tokens (the feed-forward block's rows)
    plan: dict[str, Any] | None = None  # with max_vram: sd.cpp's graph-cut plan of this graph


def host_video_bytes(width: int, height: int, num_frames: int) -> int:
    """Host memory a generation's decoded video takes at its peak: sd.cpp's f32 tensor
    (12 B a pixel) and its uint8 frames (3 B), whatever the device."""
    return 15 * width * height * num_frames


def _tile(latent: int, requested: int, factor: float = 1.0) -> int:
    """sd.cpp's VAE::get_tile_sizes for one axis (rel size 0)."""
    size = requested if requested >= 4 else 32
    size = int(size * factor)
    return max(min(size, latent), 4)


def _largest_first(a: Allocation) -> tuple[int, bool]:
    """Biggest first; at equal size the tensor before the buffer chunk it fills."""
    return (-a.nbytes, a.kind not in ("tensor", "weight tensor"))


def _buffer(total: int, largest: int, chunk: int) -> int:
    """The largest single buffer ggml makes for a buffer of ``total`` bytes."""
    if total <= chunk:
        return total
    return max(min(chunk, total), largest)


def _shape(ne: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in ne) + "]"


def _components(s: Any, dit: DitShape, cfg: Config) -> list[str]:
    """The components whose weights are loaded, in the order sd.cpp loads them (a tiny VAE that
    decodes replaces the VAE, whose weights sd.cpp then skips)."""
    out = ["diffusion_model"]
    if s.has(COMPONENTS["high_noise_diffusion_model"].graph_prefix):
        out.append("high_noise_diffusion_model")
    out.append("tiny_vae" if cfg.tiny_vae == "decode" else "vae")
    if cfg.tiny_vae == "preview":
        out.append("tiny_vae")
    if s.has(COMPONENTS["text_encoder"].graph_prefix):
        out.append("text_encoder")
    if dit.clip_images:
        if not s.has(COMPONENTS["clip_vision"].graph_prefix):
            raise ModelFileError(f"{dit.sdcpp_name} needs a CLIP vision model (clip_vision=...)")
        out.append("clip_vision")
    return out


def _weights(s: Any, components: list[str], t: Target, dit: DitShape) -> list[Allocation]:
    """Each component's weights buffer and its largest weight tensor (a DiT that never VAE-encodes:
    the VAE's and the tiny VAE's as sd.cpp loads them then, without their encoders)."""
    allocs: list[Allocation] = []
    decoder = "" if dit.uses_vae_encoder else " decoder"
    for comp in components:
        m = s.weights(comp + decoder if comp in ("vae", "tiny_vae") else comp, t.alignment, t.chunk)
        allocs.append(Allocation(f"{comp} weights", "load", _buffer(m["total"], m["largest"], t.chunk), comp,
                                 "weights buffer", buffer_total=int(m["total"])))
        allocs.append(Allocation(f"{comp} largest weight tensor ({m['type']} {_shape(m['shape'])})", "load",
                                 int(m["largest"]), comp, "weight tensor", tuple(m["shape"]), m["type"],
                                 int(m["total"])))
    return allocs


def measure(s: Any, cfg: Config, t: Target, weights_only: bool = False) -> Measurement:
    """Every allocation and phase total of ``cfg`` on ``t`` (``weights_only``: the load phase)."""
    desc = s.dit_desc(False)
    dit = DITS[desc]
    allocs = _weights(s, _components(s, dit, cfg), t, dit)
    weights = {a.component: a.buffer_total for a in allocs if a.kind == "weights buffer"}
    on_host = {"vae", "tiny_vae"} if cfg.keep_vae_on_cpu and not t.is_cpu else set()  # sd.cpp's VAE backend
    allocs = [dataclasses.replace(a, on_device=False) if a.component in on_host else a for a in allocs]
    resident = 0 if cfg.offload_to_cpu else sum(v for k, v in weights.items() if k not in on_host)
    host_weights = sum(weights.values()) - resident
    load = PhaseTotal("load", resident, host_weights)
    video = host_video_bytes(cfg.width, cfg.height, cfg.num_frames)
    if not weights_only and video > system.host_memory():
        # sd.cpp cannot hold the decoded video on this machine; measuring the graphs would itself
        # allocate (zero-filled) latents of the request's size, tens of GB at the largest sizes
        allocs.append(Allocation("decoded video, f32 and uint8 (host memory)", "VAE decode", video,
                                 _first_stage(cfg), "host buffer", on_device=False))
        problem = (f"the decoded video needs {format_bytes(video)} of host memory (sd.cpp holds it as f32, then "
                   f"as uint8); this machine has {format_bytes(system.host_memory())}")
        return Measurement(tuple(allocs), (load,), desc, problem)

    phases = [load]
    graphs = _graphs(s, cfg, t, dit, weights_only)
    # a graph run in segments never has its whole weights on the device: each segment streams its own
    streamed = {g.component for g in graphs if g.plan is not None and g.plan["segmented"]}
    allocs = [dataclasses.replace(a, on_device=False) if a.phase == "load" and a.component in streamed else a
              for a in allocs]
    previews = _preview_buffer(s, cfg, t, dit, graphs)
    budget_problems = []
    largest_weight = {a.component: a.nbytes for a in allocs if a.kind == "weight tensor"}
    for g in graphs:
        total, largest = int(g.measured["total"]), int(g.measured["largest"])
        dev = g.component not in on_host
        m = g.measured
        if g.plan is None:
            allocs.append(Allocation(f"{g.component} compute buffer", g.phase, _buffer(total, largest, t.chunk),
                                     g.component, "compute buffer", buffer_total=total, on_device=dev))
        else:
            allocs.extend(_segment_allocations(g, t, largest_weight.get(g.component, 0), dit))
            if cfg.max_vram is not None and g.plan["smallest_budget"] > cfg.max_vram:
                budget_problems.append(
                    f"max_vram={format_bytes(cfg.max_vram)} is below what {g.component}'s largest graph segment needs "
                    f"in {g.phase}: {format_bytes(g.plan['smallest_budget'])} ({g.plan['smallest_budget']:,} B, "
                    f"sd.cpp's own measure of it); sd.cpp would refuse to run it")
        name = f"{g.component} {m['op'].lower()} {m['type']} {_shape(m['shape'])}{_chunked(g, dit)}"
        allocs.append(Allocation(name, g.phase, largest, g.component, "tensor", tuple(m["shape"]), m["type"], total,
                                 dev))
        if g.plan is not None:  # the weights stream in per segment: the plan's peak is the whole phase's
            device, host = int(g.plan["device_peak"]), 0
        else:
            device, host = _phase_memory(g, total, weights, on_host, cfg.offload_to_cpu)
        if previews and g.phase.endswith("sampling"):  # a VAE preview decodes inside the step
            preview = _phase_memory(_Graph(g.phase, _preview_decoder(cfg), {}), previews, weights, on_host,
                                    cfg.offload_to_cpu)
            device, host = device + preview[0], host + preview[1]
        copies = cfg.high_noise_cache_copies if g.phase == "high-noise sampling" else cfg.cache_copies
        if copies and g.phase.endswith("sampling"):  # each expert's pass holds its own, one at a time
            w, h, t_in = _sampled_latent(cfg, dit)
            kept = copies * w * h * t_in * dit.vae.z_dim * 4
            allocs.append(Allocation(f"step cache: {copies} f32 copies of the latent",
                                     g.phase, kept, g.component, "cache copies", on_device=False))
            # separate std::vectors (no device ceiling), in the memory a CPU device samples from
            device, host = (device + kept, host) if t.is_cpu else (device, host + kept)
        phases.append(PhaseTotal(g.phase, resident + device, host_weights + host))
    floors = [(int(g.plan["smallest_budget"]), g.component) for g in graphs if g.plan is not None]
    floor, whose = max(floors, default=(None, None))
    return Measurement(tuple(allocs), tuple(phases), desc, budget_problems=tuple(budget_problems),
                       max_vram_floor=floor, max_vram_floor_component=whose)


def _segment_allocations(g: _Graph, t: Target, largest_weight: int, dit: DitShape) -> list[Allocation]:
    """A graph run under max_vram: its largest segment's streamed weights, compute buffer and the cache
    of hidden states kept between segments (or, when the budget merges every segment, sd.cpp's ordinary
    path: all the weights and one compute buffer)."""
    p, c = g.plan, g.component
    assert p is not None
    if not p["segmented"]:
        return [Allocation(f"{c} weights (max_vram: one segment, all offloaded at once)", g.phase,
                           _buffer(int(p["largest_params"]), largest_weight, t.chunk), c, "weights buffer",
                           buffer_total=int(p["largest_params"])),
                Allocation(f"{c} compute buffer (max_vram: one segment, every cut kept)", g.phase,
                           _buffer(int(p["largest_compute"]), int(g.measured["largest"]), t.chunk), c,
                           "compute buffer", buffer_total=int(p["largest_compute"]))]
    n = int(p["segments"])
    params, cache = int(p["largest_params"]), int(p["largest_cache"])
    # ggml splits a segment's weights (and the kept hidden states) into buffers of the device's size
    hidden = dit.dim * g.tokens * 4 if g.tokens else cache  # one f32 hidden state of the DiT
    return [Allocation(f"{c} segment weights, streamed (largest of {n} segments)", g.phase,
                       _buffer(params, largest_weight, t.chunk), c, "segment weights", buffer_total=params),
            Allocation(f"{c} segment compute buffer (largest of {n})", g.phase,
                       _buffer(int(p["largest_compute"]), int(g.measured["largest"]), t.chunk), c,
                       "segment compute buffer", buffer_total=int(p["largest_compute"])),
            Allocation(f"{c} hidden states kept between segments", g.phase, _buffer(cache, min(hidden, cache), t.chunk),
                       c, "segment cache", buffer_total=cache)]


def _first_stage(cfg: Config) -> str:
    """The component that encodes and decodes: the VAE, or a tiny VAE used instead."""
    return "tiny_vae" if cfg.tiny_vae == "decode" else "vae"


def _preview_decoder(cfg: Config) -> str:
    """The component that decodes previews: a tiny VAE loaded for them, else the one that decodes."""
    return "tiny_vae" if cfg.tiny_vae == "preview" else _first_stage(cfg)


def _sampled_latent(cfg: Config, dit: DitShape) -> tuple[int, int, int]:
    """The latent being sampled: width, height, frames (with a VACE reference image, one latent
    frame more than the video's)."""
    scale = dit.vae.spatial_scale
    t_lat = (cfg.num_frames - 1) // 4 + 1
    return cfg.width // scale, cfg.height // scale, t_lat + 1 if dit.vace and cfg.init_image else t_lat


def _preview_buffer(s: Any, cfg: Config, t: Target, dit: DitShape, graphs: list[_Graph]) -> int:
    """The compute buffer a decoded preview adds to a sampling step (0 without decoded previews): the
    preview decoder's graph for the latents being sampled (with a VACE reference image, one latent
    frame more than the video's)."""
    if not cfg.preview_vae:
        return 0
    w, h, t_in = _sampled_latent(cfg, dit)
    if cfg.tiny_vae != "preview" and not (dit.vace and cfg.init_image):  # the decode phase's own graph
        return sum(int(g.measured["total"]) for g in graphs if g.phase == "VAE decode")
    return int(_vae(s, True, cfg, t, w, h, t_in, dit, tiny=cfg.tiny_vae is not None)["total"])


def _chunked(g: _Graph, dit: DitShape) -> str:
    """" (the feed-forward block in K token chunks)" when the DiT's largest tensor is one chunk of
    its feed-forward activation (patch 0007 split it at the target's ceiling); "" otherwise."""
    shape = [int(d) for d in g.measured["shape"]]
    if not g.tokens or len(shape) != 2 or shape[0] != dit.ffn_dim or shape[1] >= g.tokens:
        return ""
    return f" (the feed-forward block in {-(-g.tokens // shape[1])} token chunks)"


def _phase_memory(g: _Graph, total: int, weights: dict[str, int], on_host: set[str],
                  offload: bool) -> tuple[int, int]:
    """What running ``g`` adds to the device and the host: its compute buffer (and, offloaded,
    its weights, moved to the device while it runs)."""
    if g.component in on_host:
        return 0, total
    return total + (weights[g.component] if offload else 0), 0


def _graphs(s: Any, cfg: Config, t: Target, dit: DitShape, weights_only: bool) -> list[_Graph]:
    """Each phase's graph, measured, in the order sd.cpp runs them."""
    fa, al, ch = cfg.flash_attention, t.alignment, t.chunk
    has_te = s.has(COMPONENTS["text_encoder"].graph_prefix)
    graphs: list[_Graph] = []
    # with max_vram, the graphs sd.cpp cuts into segments (the DiT's, T5's, CLIP vision's) are planned too
    budget = cfg.max_vram if cfg.max_vram is not None and cfg.offload_to_cpu and not t.is_cpu else None
    if has_te and (not weights_only or budget is not None):  # with a budget: its floor is known before loading
        graphs.append(_Graph("text encoding", "text_encoder", s.t5_graph(TEXT_ENCODER.tokens, fa, al, ch),
                             plan=None if budget is None else s.t5_plan(TEXT_ENCODER.tokens, fa, al, ch, budget)))
    if dit.clip_images and (cfg.init_image or cfg.end_image):
        graphs.append(_Graph("clip vision", "clip_vision", s.clip_vision_graph(fa, al, ch),
                             plan=None if budget is None else s.clip_vision_plan(fa, al, ch, budget)))
    if weights_only:
        return graphs
    scale = dit.vae.spatial_scale
    if dit.encodes_whole_clip:
        # sd.cpp encodes the whole conditioning video (start/end frames, grey elsewhere)
        graphs.append(_Graph("VAE encode", _first_stage(cfg), _vae(s, False, cfg, t, cfg.width, cfg.height, cfg.num_frames,
                                                       dit)))
    elif dit.image_as_first_latent and cfg.init_image:
        # the image is encoded alone, as the first latent frame
        graphs.append(_Graph("VAE encode", _first_stage(cfg), _vae(s, False, cfg, t, cfg.width, cfg.height, 1, dit)))
    elif dit.vace:
        # VACE: the reference image alone, then the control video (grey where none is given) twice,
        # as its inactive and reactive parts; one encode's buffer at a time
        if cfg.init_image:
            graphs.append(_Graph("VAE encode (reference image)", _first_stage(cfg),
                                 _vae(s, False, cfg, t, cfg.width, cfg.height, 1, dit)))
        graphs.append(_Graph("VAE encode", _first_stage(cfg), _vae(s, False, cfg, t, cfg.width, cfg.height, cfg.num_frames,
                                                       dit)))
    w, h, t_lat = cfg.width // scale, cfg.height // scale, (cfg.num_frames - 1) // 4 + 1
    # the VACE reference image's latent frame is sampled before the video's (and dropped before decoding)
    t_in = t_lat + 1 if dit.vace and cfg.init_image else t_lat
    context = [dit.text_dim, TEXT_ENCODER.tokens if has_te else TEXT_ENCODER.empty_context_tokens]
    clip_fea = [CLIP_VISION.dim, CLIP_VISION.tokens * dit.clip_images] if dit.clip_images else []
    c_concat = [w, h, t_lat, dit.in_dim - dit.out_dim] if dit.encodes_whole_clip else []
    x = [w, h, t_in, dit.vae.z_dim]
    vace = [w, h, t_in, dit.vace_in_dim] if dit.vace else []
    steps_in = t_lat if dit.image_as_first_latent else 1
    ceiling = t.max_allocation or 0  # the DiT chunks its feed-forward block above it, as a real run does
    pt, ph, pw = dit.patch_size
    tokens = t_in // pt * (h // ph) * (w // pw)
    experts = [True, False] if s.has(COMPONENTS["high_noise_diffusion_model"].graph_prefix) else [False]
    for high in experts:
        args = (high, x, context, clip_fea, c_concat, vace, steps_in, fa, al, ch, ceiling)
        graphs.append(_Graph("high-noise sampling" if high else "sampling",
                             "high_noise_diffusion_model" if high else "diffusion_model", s.dit_graph(*args), tokens,
                             plan=None if budget is None else s.dit_plan(*args, budget)))
    graphs.append(_Graph("VAE decode", _first_stage(cfg), _vae(s, True, cfg, t, w, h, t_lat, dit)))
    return graphs


def _vae(s: Any, decode: bool, cfg: Config, t: Target, w: int, h: int, frames: int,
         dit: DitShape, tiny: bool | None = None) -> dict[str, Any]:
    """The VAE's graph (``tiny``, default when a tiny VAE decodes: the TAEHV's): decoding latents of
    ``w`` x ``h`` x ``frames``, or encoding pixels."""
    fa, al, ch = cfg.flash_attention, t.alignment, t.chunk
    tx, ty = cfg.tile_size or (0, 0)
    tiny = cfg.tiny_vae == "decode" if tiny is None else tiny
    if decode:
        if cfg.vae_tiling:
            w, h = _tile(w, tx), _tile(h, ty)
        shape = [w, h, frames, dit.vae.z_dim]
    else:
        if cfg.vae_tiling:
            scale = dit.vae.spatial_scale
            w = _tile(w // scale, tx, _TILE_ENCODE_FACTOR) * scale
            h = _tile(h // scale, ty, _TILE_ENCODE_FACTOR) * scale
        shape = [w, h, frames, 3]
    result: dict[str, Any]
    if tiny:
        result = s.tae_graph(decode, shape, al, ch, cfg.vae_conv_direct)
    else:
        result = s.vae_graph(decode, shape, fa, al, ch, cfg.vae_conv_direct)
    return result


def smallest_budget(s: Any, cfg: Config, t: Target) -> int:
    """The smallest max_vram under which sd.cpp plans every segmented graph of ``cfg`` (weights
    offloaded): the largest single segment's need, by sd.cpp's own measure."""
    probe = dataclasses.replace(cfg, offload_to_cpu=True, max_vram=t.total_memory or 2**40)
    dit = DITS[s.dit_desc(False)]
    return max((int(g.plan["smallest_budget"]) for g in _graphs(s, probe, t, dit, False) if g.plan is not None),
               default=0)


def evaluate(s: Any, cfg: Config, t: Target, weights_only: bool = False) -> Evaluation:
    """``measure`` judged against the target's ceiling and memory."""
    m = measure(s, cfg, t, weights_only)
    largest = min([a for a in m.allocations if a.on_device] or m.allocations, key=_largest_first)
    peak = max(p.device for p in m.phases)
    problems = [m.host_problem] if m.host_problem else []
    problems.extend(m.budget_problems)
    if t.max_allocation is not None and largest.nbytes > t.max_allocation:
        a = largest
        problems.append(f"{a.name} ({a.phase}) needs {format_bytes(a.nbytes)} ({a.nbytes:,} B) in one allocation; "
                        f"the device allows {format_bytes(t.max_allocation)} ({t.max_allocation:,} B)")
    if t.total_memory is not None and peak > t.total_memory:
        worst = max(m.phases, key=lambda p: p.device)
        problems.append(f"{worst.phase} needs {format_bytes(worst.device)} of device memory; the device has "
                        f"{format_bytes(t.total_memory)}")
    return Evaluation(not problems, largest, m.allocations, m.phases, peak, tuple(problems), m.desc,
                      m.max_vram_floor, m.max_vram_floor_component)
