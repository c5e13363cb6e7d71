"""How results show in a notebook: ``Video`` as an inline, playable WebM; ``Preflight`` and
``SystemInfo`` as HTML tables. Jupyter calls the classes' ``_repr_html_``, which land here."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from wanpy.units import format_bytes

if TYPE_CHECKING:
    from wanpy.memory.report import Preflight
    from wanpy.progress import Progress
    from wanpy.system import SystemInfo
    from wanpy.video import Video

__all__ = ["MAX_EMBED_BYTES", "live_preview", "preflight_html", "system_html", "video_html"]

# A notebook keeps what it shows: past this the clip is not embedded, its first frame is shown
# with the way to see it
MAX_EMBED_BYTES = 16 << 20
_MAX_DISPLAY_WIDTH = 640


def png_bytes(frame: np.ndarray) -> bytes:
    """One uint8 (H, W, 3) frame as a PNG file's bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _png(frame: np.ndarray) -> str:
    return base64.b64encode(png_bytes(frame)).decode("ascii")


def video_html(video: Video, *, max_bytes: int = MAX_EMBED_BYTES) -> str:
    """An HTML5 <video> (VP9 WebM, muted, looping, with controls; its first frame as the poster),
    or, when the encoded clip is over ``max_bytes``, the first frame and how to see the rest."""
    width = min(video.width, _MAX_DISPLAY_WIDTH)
    poster = f"data:image/png;base64,{_png(video.frames[0])}" if video.num_frames else ""
    caption = html.escape(str(video))
    encoded = io.BytesIO()
    video.save(encoded, format="webm", pad=True)
    if encoded.tell() > max_bytes:
        return (f'<figure><img src="{poster}" width="{width}"><figcaption>{caption}<br>not embedded: the WebM '
                f"is {format_bytes(encoded.tell())}, over {format_bytes(max_bytes)}; "
                "<code>video.save(\"clip.webm\")</code> writes it</figcaption></figure>")
    data = base64.b64encode(encoded.getvalue()).decode("ascii")
    return (f'<figure><video width="{width}" controls loop muted autoplay playsinline poster="{poster}">'
            f'<source src="data:video/webm;base64,{data}" type="video/webm"></video>'
            f"<figcaption>{caption}</figcaption></figure>")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def preflight_html(report: Preflight) -> str:
    p = report.params
    verdict = "FITS" if report.fits else "DOES NOT FIT: " + "; ".join(report.problems)
    ceiling = format_bytes(report.max_allocation) if report.max_allocation else "none"
    allocations = _table(("allocation", "phase", "size", "fits"), (
        (a.name + ("" if a.on_device else " (host)"), a.phase, format_bytes(a.nbytes),
         "yes" if report.max_allocation is None or not a.on_device or a.nbytes <= report.max_allocation else "NO")
        for a in sorted(report.allocations, key=lambda a: -a.nbytes)))
    phases = _table(("phase", "device memory", "host memory"),
                    ((ph.phase, format_bytes(ph.device), format_bytes(ph.host)) for ph in report.phases))
    suggestions = "".join(f"<li>{html.escape(s)}</li>" for s in report.suggestions)
    return (f"<div><b>pre-flight: {html.escape(report.model)}, {p['width']}x{p['height']}, {p['num_frames']} "
            f"frames</b> on {html.escape(report.device)} (per-allocation ceiling {ceiling}; peak "
            f"{format_bytes(report.peak)})<br><b>{html.escape(verdict)}</b>{allocations}{phases}"
            f"{'<ul>' + suggestions + '</ul>' if suggestions else ''}</div>")


def system_html(info: SystemInfo) -> str:
    devices = _table(("#", "name", "type", "backend", "memory", "max allocation"), (
        (d.index, d.name, d.type, d.backend, format_bytes(d.total_memory) if d.total_memory else "-",
         format_bytes(d.max_allocation) if d.max_allocation else "none") for d in info.devices))
    env = _table(("variable", "value"), ((e.name, e.value) for e in info.environment)) if info.environment else ""
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in info.warnings)
    return (f"<div><b>wanpy {html.escape(info.wanpy_version)}</b>, backend {html.escape(info.backend)}, "
            f"stable-diffusion.cpp {html.escape(info.sdcpp_version)} ({html.escape(info.sdcpp_source)})"
            f"{devices}{env}{'<ul>' + warnings + '</ul>' if warnings else ''}</div>")


def live_preview() -> Callable[[Progress], None]:
    """A ``callback=`` for a notebook: one image, updated in place with each preview's middle
    frame (generate with ``preview="proj"`` or ``"vae"``). Needs ipywidgets."""
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError as exc:
        raise ImportError("wanpy.display.live_preview needs ipywidgets (pip install ipywidgets)") from exc
    image = ipywidgets.Image(format="png")
    label = ipywidgets.Label("waiting for the first preview (generate with preview='proj' or 'vae')")
    display(ipywidgets.VBox([label, image]))  # type: ignore[no-untyped-call]

    def show(progress: Progress) -> None:
        if progress.preview is not None:
            frames = progress.preview
            image.value = png_bytes(frames[len(frames) // 2])
            label.value = f"{progress.phase.replace('_', ' ')}: step {progress.step} of {progress.steps}"

    return show

