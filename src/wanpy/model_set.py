"""The model files of one pipeline: checked, identified from their headers, and matched to a
Wan family, before any weight is loaded."""

from __future__ import annotations

import os
from typing import Any

from wanpy.catalogue import FAMILIES, TINY_VAES, WanFamily
from wanpy.catalogue import family as find_family
from wanpy.errors import ModelFileError
from wanpy.validation import check_file

__all__ = ["ModelFiles", "check_model_files", "family_of_files"]

# component -> resolved path (None: not given), as ``WanPipeline.files``
ModelFiles = dict[str, "str | None"]
PathArg = str | os.PathLike[str]


def check_model_files(diffusion_model: PathArg, vae: PathArg, text_encoder: PathArg | None = None,
                      high_noise_diffusion_model: PathArg | None = None,
                      clip_vision: PathArg | None = None, tiny_vae: PathArg | None = None) -> ModelFiles:
    """Each given path as a readable regular file (resolved), None where not given."""
    given: dict[str, Any] = {"diffusion_model": diffusion_model, "vae": vae, "text_encoder": text_encoder,
                             "high_noise_diffusion_model": high_noise_diffusion_model, "clip_vision": clip_vision,
                             "tiny_vae": tiny_vae}
    return {k: None if v is None and k not in ("diffusion_model", "vae") else check_file(k, v)
            for k, v in given.items()}


def _identify(path: str, slot: str) -> Any:
    from wanpy.identify import identify_file

    try:
        return identify_file(path)
    except ModelFileError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{slot}: cannot read {path!r}: {exc}", path=path) from exc


def _dit_family(path: str, *, two_experts: bool, slot: str) -> WanFamily:
    kind = _identify(path, slot)
    if kind.kind != "dit":
        raise ModelFileError(f"{slot}: {path!r} is not a Wan diffusion model (it reads as: {kind})", path=path)
    if kind.problems:
        raise ModelFileError(f"{slot}: {path!r} cannot run in sd.cpp: {'; '.join(kind.problems)}", path=path)
    candidates = [find_family(f) for f in kind.families]
    for fam in candidates:
        if fam.two_experts == two_experts:
            return fam
    known = ", ".join(f.name for f in candidates) or "none wanpy knows"
    if two_experts:
        raise ValueError(f"{slot}: {path!r} is {known}: a single-expert model, but a high-noise expert was given")
    raise ModelFileError(f"{slot}: {path!r} is {known}: not a Wan family wanpy runs "
                         f"({', '.join(FAMILIES)})", path=path)


def family_of_files(files: ModelFiles) -> WanFamily:
    """The Wan family the files make up, every component checked against it (headers only)."""
    dit = files["diffusion_model"]
    assert dit is not None
    high = files["high_noise_diffusion_model"]
    fam = _dit_family(dit, two_experts=high is not None, slot="diffusion_model")
    if high is not None:
        hn = _dit_family(high, two_experts=True, slot="high_noise_diffusion_model")
        if hn.name != fam.name:
            raise ValueError(f"high_noise_diffusion_model is {hn.name}, diffusion_model is {fam.name}")
    if fam.needs_clip_vision and files["clip_vision"] is None:
        raise ValueError(f"{fam.name} needs clip_vision (CLIP ViT-H) for its image conditioning")
    vae_path = files["vae"]
    assert vae_path is not None
    vae = _identify(vae_path, "vae")
    if vae.kind != "vae" or vae.family != fam.vae.name:
        raise ModelFileError(f"vae: {vae_path!r} reads as: {vae}; {fam.name} needs the {fam.vae.name}", path=vae_path)
    if vae.has_encoder is False and fam.dit.uses_vae_encoder:
        raise ModelFileError(f"vae: {vae_path!r} has no encoder weights; {fam.name} VAE-encodes (images, a control "
                             "video): it needs the whole Wan VAE (encoder and decoder)", path=vae_path)
    for slot in ("text_encoder", "clip_vision", "tiny_vae"):
        path = files.get(slot)
        if path is not None:
            got = _identify(path, slot)
            if got.kind != slot or got.problems:
                raise ModelFileError(f"{slot}: {path!r} reads as: {got}", path=path)
            if slot == "tiny_vae" and TINY_VAES[got.name or ""].vae != fam.vae.name:
                raise ModelFileError(f"tiny_vae: {path!r} is {got.name}, which decodes the "
                                     f"{TINY_VAES[got.name or ''].vae}'s latents; {fam.name} makes the "
                                     f"{fam.vae.name}'s", path=path)
    return fam

