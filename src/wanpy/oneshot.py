"""The one-shot ``wanpy.generate_video``: check everything, load, generate once, free, write.

Every value is checked (the request built from the files' headers, LoRAs, the output path,
``fit="auto"``'s choice) before a weight is loaded; sd.cpp frees each model as soon as the
generation is done with it, as sd-cli does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanpy.memory import choose_fit
from wanpy.model_set import PathArg, check_model_files, family_of_files
from wanpy.pipeline import LOAD_SETTINGS, WanPipeline, check_diffusion_conv_direct, check_previews, request_memory
from wanpy.progress import Progress
from wanpy.request import RequestOptions, build_request, check_options
from wanpy.system import Device
from wanpy.validation import check_bool, check_parse_stack, check_tiny_vae_use
from wanpy.video import Video

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["generate_video"]


class _OneShotPipeline(WanPipeline):
    """sd.cpp frees each model's weights as soon as the generation is done with it (the text
    encoder after encoding, the DiT after sampling), so the VAE decodes without them in
    memory. The context can generate once."""

    _free_params_immediately = True


def generate_video(prompt: str, *, diffusion_model: PathArg, vae: PathArg, text_encoder: PathArg | None = None,
                   high_noise_diffusion_model: PathArg | None = None, clip_vision: PathArg | None = None,
                   flash_attention: bool = False, offload_to_cpu: bool = False, keep_vae_on_cpu: bool = False,
                   n_threads: int | None = None, device: Device | int | None = None, mmap: bool = False,
                   vae_conv_direct: bool = False, diffusion_conv_direct: bool = False,
                   tiny_vae: PathArg | None = None, tiny_vae_use: str = "decode", max_vram: int | str | None = None,
                   output: str | os.PathLike[str] | None = None, progress: bool = True,
                   callback: Callable[[Progress], Any] | None = None,
                   **options: Unpack[RequestOptions]) -> Video:
    """One-shot: check, load, generate, free; optionally write ``output`` (.webm/.mp4/.gif).

    Takes :class:`WanPipeline`'s arguments and the generation options of
    ``wanpy.RequestOptions`` (as :meth:`WanPipeline.generate_video`). Unknown names raise
    TypeError and bad values ValueError before anything is loaded.
    """
    from wanpy.encode import check_output

    check_options(options, "generate_video")
    files = check_model_files(diffusion_model, vae, text_encoder, high_noise_diffusion_model, clip_vision, tiny_vae)
    settings: dict[str, Any] = {"flash_attention": check_bool("flash_attention", flash_attention),
                "offload_to_cpu": check_bool("offload_to_cpu", offload_to_cpu),
                "keep_vae_on_cpu": check_bool("keep_vae_on_cpu", keep_vae_on_cpu), "max_vram": max_vram}
    fixed = {"mmap": check_bool("mmap", mmap), "vae_conv_direct": check_bool("vae_conv_direct", vae_conv_direct)}
    use = check_tiny_vae_use(tiny_vae_use)
    check_diffusion_conv_direct(diffusion_conv_direct)
    check_bool("progress", progress)
    request = build_request(family_of_files(files), prompt, model_files=files, **options)
    check_previews(request, callback, tiny_vae=files["tiny_vae"])
    check_parse_stack(request.prompt, request.negative_prompt)
    if output is not None:
        # a missing or unwritable place, or a rate the container cannot keep, fails now, not after the generation
        check_output(output, fps=request.interpolate or request.fps)
    dit_path = os.fspath(diffusion_model)
    choice = None
    if request.fit == "auto":
        # chosen before the weights are loaded, so they load once; the pipeline's own
        # pre-flight confirms the choice
        choice = choose_fit(dit_path, width=request.width, height=request.height, num_frames=request.num_frames,
                            device=device, text_encoder=files["text_encoder"], vae=files["vae"],
                            high_noise_diffusion_model=files["high_noise_diffusion_model"],
                            clip_vision=files["clip_vision"], flash_attention=settings["flash_attention"],
                            offload_to_cpu=settings["offload_to_cpu"], keep_vae_on_cpu=settings["keep_vae_on_cpu"],
                            vae_conv_direct=fixed["vae_conv_direct"], tiny_vae=files["tiny_vae"], tiny_vae_use=use,
                            max_vram=max_vram, **request_memory(request))
        settings.update({k: choice.settings[k] for k in LOAD_SETTINGS})
        request = dataclasses.replace(request, fit="strict", vae_tiling=choice.settings["vae_tiling"],
                                      tile_size=choice.settings["tile_size"])
    with _OneShotPipeline(dit_path, vae, files["text_encoder"], files["high_noise_diffusion_model"],
                          files["clip_vision"], vae_tiling=request.vae_tiling, n_threads=n_threads, device=device,
                          preflight=request.preflight, progress=progress, tiny_vae=files["tiny_vae"],
                          tiny_vae_use=use, **settings, **fixed) as pipe:
        video = pipe.generate_video(request, progress=progress, callback=callback)
    video = dataclasses.replace(video, timings=dataclasses.replace(video.timings, load=pipe.load_seconds))
    if choice is not None:
        assert video.request is not None
        video.params["fit"] = choice.as_params()  # what changed from this call's arguments
        video = dataclasses.replace(video, request=dataclasses.replace(video.request, fit="auto"))
    if output is not None:
        video.save(Path(output))
    return video
