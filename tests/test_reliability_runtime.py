"""Bad input at generation time never kills the process, never loses or fakes output.

Each case (see ``reliability_harness``) asserts: the process exits normally, the expected
exception with a message saying what to do, no output file left, and the pipeline (or a
new one) still works afterwards. Pure-validation families (numbers, text, images, image
pairs) share one process per family and must refuse before native generation starts;
everything that reaches sd.cpp runs in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from reliability_harness import GENERATING, LOADING, Case, Outcome, check, models_of, run
from wanpy.testing import cached_model_set
from wanpy.validation import MAX_TEXT_BYTES

pytestmark = pytest.mark.slow

COMMON = r'''
import contextlib, logging, os, re, signal, threading, time, types
import numpy as np
import wanpy
FILES = {"diffusion_model": MODELS["diffusion_model"], "vae": MODELS["vae"]}
LOAD = {"n_threads": 1}  # the work is tiny: a second thread only adds CPU time spent waiting

def pipeline(**kw):
    return wanpy.WanPipeline(FILES["diffusion_model"], FILES["vae"], **{**LOAD, **kw})

@contextlib.contextmanager
def ctrl_c_after(pattern, delay):
    """The user presses Ctrl-C (SIGINT) `delay` s after a wanpy log line matches `pattern`."""
    # as in an interactive Python: a job started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pressed = []
    class Trigger(logging.Handler):
        def emit(self, record):
            if not pressed and re.search(pattern, record.getMessage()):
                t = threading.Thread(target=lambda: (time.sleep(delay), os.kill(os.getpid(), signal.SIGINT)))
                pressed.append(t)
                t.start()
    trigger = Trigger()
    logging.getLogger("wanpy").addHandler(trigger)
    try:
        yield
    finally:
        logging.getLogger("wanpy").removeHandler(trigger)
        for t in pressed:
            t.join()
        assert pressed, f"no log line matched {pattern!r}: Ctrl-C was never pressed"
'''

WITH_PIPE = COMMON + "pipe = pipeline()\n"

# Wan2.1 FLF2V-14B (start and end images) from a sparse set, with the weights NOT loaded and
# sd.cpp's generate_video replaced: these cases must be refused in Python, before either.
FLF2V_STUB = COMMON + r'''
from wanpy.pipeline import WanPipeline
from wanpy.testing import make_model_set
assert hasattr(WanPipeline, "_load"), "this stub replaces WanPipeline._load"
def _not_here(*args, **kwargs):
    raise AssertionError("reached sd.cpp's generate_video")
WanPipeline._load = lambda self: types.SimpleNamespace(close=lambda: None, generate=_not_here)
flf = make_model_set(os.path.join(TMP, "flf2v"), variant="wan2.1-flf2v-14b", dtype="q4_0", sparse=True)
pipe = WanPipeline(flf.diffusion_model, flf.vae, clip_vision=flf.clip_vision, preflight=False)
IMG = np.zeros((16, 16, 3), np.uint8)
'''


@pytest.fixture(scope="module")
def kit():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


def _gen(kwargs: str, prompt: str = "'a red fox'") -> str:
    return f"pipe.generate_video({prompt}, **{{**SMALL, **dict({kwargs})}}).save(OUT)"


def refused(id: str, kwargs: str, error: str, message: str, **extra: Any) -> Case:
    """A generation the pipeline must refuse before sd.cpp generates anything."""
    return Case(id, _gen(kwargs), error, message, forbid=GENERATING, **extra)


# --- numbers -----------------------------------------------------------------------------------
NUMBERS = [
    refused("width 0", "width=0", "ValueError", "width must be >= 1, got 0"),
    refused("width negative", "width=-16", "ValueError", "width must be >= 1, got -16"),
    refused("width huge", "width=10**9", "ValueError", "width must be <= 16384, got 1000000000"),
    refused("width NaN", "width=float('nan')", "TypeError", "width must be an integer, got float nan"),
    refused("width inf", "width=float('inf')", "TypeError", "width must be an integer, got float inf"),
    refused("width a whole float", "width=16.0", "TypeError", "width must be an integer, got float 16.0"),
    refused("width a string", "width='16'", "TypeError", "width must be an integer, got str '16'"),
    refused("width a bool", "width=True", "TypeError", "width must be an integer, got bool True"),
    refused("height 0", "height=0", "ValueError", "height must be >= 1, got 0"),
    refused("height 2**64", "height=2**64", "ValueError", "height must be <= 16384"),
    refused("height NaN", "height=float('nan')", "TypeError", "height must be an integer, got float nan"),
    refused("size within limits but too big for the machine", "width=16384, height=16384",
            "AllocationTooLargeError", "does not fit"),
    refused("num_frames 0", "num_frames=0", "ValueError", "num_frames must be >= 1, got 0"),
    refused("num_frames negative", "num_frames=-3", "ValueError", "num_frames must be >= 1, got -3"),
    refused("num_frames huge", "num_frames=10**9", "ValueError",
            r"num_frames must be <= 689, got 1000000000: sd.cpp aborts .*continue_from"),
    refused("num_frames past sd.cpp's VAE graph (693)", "num_frames=693", "ValueError",
            r"num_frames must be <= 689, got 693"),
    refused("num_frames NaN", "num_frames=float('nan')", "TypeError", "num_frames must be an integer, got float nan"),
    refused("num_frames a whole float", "num_frames=5.0", "TypeError", "num_frames must be an integer, got float 5.0"),
    refused("num_frames in a nested object", "num_frames={'value': 161}", "TypeError",
            "num_frames must be an integer, got dict"),
    refused("frames within limits but too many for the machine", "width=512, height=512, num_frames=657",
            "AllocationTooLargeError", "does not fit"),
    refused("duration NaN", "num_frames=None, duration=float('nan')", "ValueError", "duration must be finite"),
    refused("duration negative", "num_frames=None, duration=-1.0", "ValueError", "duration must be > 0"),
    refused("duration too long for sd.cpp", "num_frames=None, duration=60.0625", "ValueError",
            r"961 frames; at most 689 .* continue"),
    refused("duration of a frame count that is not 4k+1", "num_frames=None, duration=1.0", "ValueError",
            r"duration=1.0 s at 16 fps is 16 frames, not 4k\+1: use 13 or 17 frames \(0.8125 s or 1.062 s\)"),
    refused("duration and num_frames", "duration=1.0", "TypeError", "pass num_frames or duration, not both"),
    refused("fps negative", "fps=-16", "ValueError", r"fps must be in \(0, 240\], got -16"),
    refused("fps huge", "fps=1e9", "ValueError", r"fps must be in \(0, 240\], got 1000000000.0"),
    refused("fps NaN", "fps=float('nan')", "ValueError", "fps must be a finite number, got nan"),
    refused("fps inf", "fps=float('inf')", "ValueError", "fps must be a finite number, got inf"),
    refused("fps a string", "fps='16'", "TypeError", "fps must be an int, float or fractions.Fraction, got '16'"),
    refused("steps negative", "steps=-1", "ValueError", "steps must be >= 1, got -1"),
    refused("steps huge", "steps=10**6", "ValueError", "steps must be <= 1000, got 1000000"),
    refused("steps NaN", "steps=float('nan')", "TypeError", "steps must be an integer, got float nan"),
    refused("steps a whole float", "steps=2.0", "TypeError", "steps must be an integer, got float 2.0"),
    refused("cfg_scale negative", "cfg_scale=-1.0", "ValueError", "cfg_scale must be >= 0, got -1.0"),
    refused("cfg_scale inf", "cfg_scale=float('inf')", "ValueError", "cfg_scale must be finite, got inf"),
    refused("cfg_scale huge", "cfg_scale=1e9", "ValueError", "cfg_scale must be <= 100"),
    refused("cfg_scale a string", "cfg_scale='5'", "TypeError", "cfg_scale must be a number, got str '5'"),
    refused("flow_shift 0", "flow_shift=0.0", "ValueError", "flow_shift must be > 0, got 0.0"),
    refused("flow_shift NaN", "flow_shift=float('nan')", "ValueError", "flow_shift must be finite, got nan"),
    refused("strength 0", "strength=0.0", "ValueError", "strength must be > 0, got 0.0"),
    refused("strength negative", "strength=-0.5", "ValueError", "strength must be > 0, got -0.5"),
    refused("strength above 1", "strength=1.5", "ValueError", "strength must be <= 1, got 1.5"),
    refused("strength NaN", "strength=float('nan')", "ValueError", "strength must be finite, got nan"),
    refused("strength inf", "strength=float('-inf')", "ValueError", "strength must be finite, got -inf"),
    refused("seed -1", "seed=-1", "ValueError", "seed must be >= 0, got -1"),
    refused("seed 2**63", "seed=2**63", "ValueError", "seed must be <= 9223372036854775807, got 9223372036854775808"),
    refused("seed 2**64", "seed=2**64", "ValueError", "seed must be <= 9223372036854775807"),
    refused("seed a float", "seed=1.5", "TypeError", "seed must be an integer, got float 1.5"),
    refused("seed NaN", "seed=float('nan')", "TypeError", "seed must be an integer, got float nan"),
    refused("seed a string", "seed='42'", "TypeError", "seed must be an integer, got str '42'"),
    refused("tile_size zero", "tile_size=(0, 0)", "ValueError", r"tile_size\[0\] must be >= 4, got 0"),
    refused("tile_size of three", "tile_size=(8, 8, 8)", "ValueError", r"tile_size must be \(x, y\)"),
    refused("tile_overlap 1", "tile_overlap=1.0", "ValueError", "tile_overlap must be <= 0.5, got 1.0"),
    refused("tile_overlap NaN", "tile_overlap=float('nan')", "ValueError", "tile_overlap must be finite"),
    refused("high_noise_steps on a one-expert model", "high_noise_steps=2", "ValueError",
            "high_noise_steps only apply to Wan2.2 A14B"),
]

# --- text ----------------------------------------------------------------------------------------
TEXT = [
    Case("prompt with a lone surrogate", _gen("", prompt="'a red \\ud800 fox'"), "ValueError",
         r"prompt cannot be encoded as UTF-8 \(surrogates not allowed at index 6\)", forbid=GENERATING),
    Case("negative_prompt with a NUL byte", _gen("negative_prompt='blurry\\x00'"), "ValueError",
         "negative_prompt contains a NUL character at index 6", forbid=GENERATING),
    Case("prompt of 100 000 characters", _gen("", prompt="'a red fox ' * 10_000"), "ValueError",
         r"prompt is 100000 bytes as UTF-8 \(100000 characters\); at most 10000 .* shorten it", forbid=GENERATING),
    Case("prompt of 10 000 CJK characters (30 000 bytes)", _gen("", prompt="'狐' * 10_000"), "ValueError",
         r"prompt is 30000 bytes as UTF-8 \(10000 characters\)", forbid=GENERATING),
    Case("negative_prompt of 100 000 characters", _gen("negative_prompt='blurry ' * 14_286"), "ValueError",
         r"negative_prompt is 100002 bytes", forbid=GENERATING),
    Case("prompt as bytes", _gen("", prompt="b'a red fox'"), "TypeError", "prompt must be a str, got bytes",
         forbid=GENERATING),
    Case("prompt None", _gen("", prompt="None"), "TypeError", "prompt must be a str, got NoneType",
         forbid=GENERATING),
]

# --- images (a text-to-video model: images are decoded and checked before the family's rules) ---------
IMAGE_FILES = COMMON + r'''
from PIL import Image
pipe = pipeline()
rng = np.random.default_rng(0)
def _path(name): return os.path.join(TMP, name)
Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(_path("ok.png"))
_png = open(_path("ok.png"), "rb").read()
open(_path("truncated.png"), "wb").write(_png[:-200])
open(_path("text.png"), "w").write("not an image")
Image.fromarray(np.zeros((16, 16), np.uint16)).save(_path("gray16.png"))
os.mkdir(_path("folder.png"))
'''


def _img(expr: str) -> str:
    return _gen(f"init_image={expr}")


IMAGES = [
    Case("RGBA array", _img("np.zeros((16, 16, 4), np.uint8)"), "ValueError",
         r"init_image: array must be HxWx3 \(RGB\), got shape \(16, 16, 4\)", forbid=GENERATING),
    Case("grayscale array", _img("np.zeros((16, 16), np.uint8)"), "ValueError",
         r"init_image: array must be HxWx3 \(RGB\), got shape \(16, 16\)", forbid=GENERATING),
    Case("float32 array", _img("np.zeros((16, 16, 3), np.float32)"), "ValueError",
         "init_image: array dtype must be uint8, got float32", forbid=GENERATING),
    Case("uint16 array", _img("np.zeros((16, 16, 3), np.uint16)"), "ValueError",
         "init_image: array dtype must be uint8, got uint16", forbid=GENERATING),
    Case("zero-height array", _img("np.zeros((0, 16, 3), np.uint8)"), "ValueError",
         r"init_image: image is empty, shape \(0, 16, 3\)", forbid=GENERATING),
    Case("zero-width array", _img("np.zeros((16, 0, 3), np.uint8)"), "ValueError",
         r"init_image: image is empty, shape \(16, 0, 3\)", forbid=GENERATING),
    Case("RGBA PIL image", _img("Image.new('RGBA', (16, 16))"), "ValueError",
         r"init_image: PIL image mode must be RGB, got RGBA \(convert\('RGB'\) it\)", forbid=GENERATING),
    Case("a list", _img("[[0, 0, 0]]"), "TypeError",
         "init_image must be a path, a PIL image or a numpy array, got list", forbid=GENERATING),
    Case("missing image file", _img("_path('nope.png')"), "FileNotFoundError", "init_image: no such image file",
         forbid=GENERATING),
    Case("a directory as the image", _img("_path('folder.png')"), "IsADirectoryError",
         "init_image: is a directory, not an image file", forbid=GENERATING),
    Case("a text file as the image", _img("_path('text.png')"), "ValueError", "init_image: not a readable image",
         forbid=GENERATING),
    Case("truncated PNG", _img("_path('truncated.png')"), "ValueError",
         r"init_image: cannot decode the image .*truncated\.png.*is the file complete\?", forbid=GENERATING),
    Case("16-bit grayscale PNG", _img("_path('gray16.png')"), "ValueError",
         "init_image: PIL image mode must be RGB, got I;16", forbid=GENERATING),
    Case("a valid image on a text-to-video model", _img("_path('ok.png')"), "ValueError",
         "wan2.1-t2v-1.3b is text-to-video: it takes no init_image", forbid=GENERATING),
    Case("an end image on a text-to-video model", _gen("end_image=np.zeros((16, 16, 3), np.uint8)"), "ValueError",
         "text-to-video: it takes no init_image/end_image", forbid=GENERATING),
]

# --- image pairs (Wan2.1 FLF2V-14B, weights not loaded) ---------------------------------------------
PAIRS = [
    Case("start and end images of different sizes", _gen("init_image=IMG, end_image=np.zeros((32, 16, 3), np.uint8)"),
         "ValueError", r"end_image is 16x32 but the video is 16x16: resize it first", forbid=GENERATING),
    Case("start image of another size than the video", _gen("init_image=np.zeros((32, 32, 3), np.uint8), "
                                                            "end_image=IMG"),
         "ValueError", r"init_image is 32x32 but the video is 16x16", forbid=GENERATING),
    Case("no end image", _gen("init_image=IMG"), "ValueError", "wan2.1-flf2v-14b needs end_image",
         forbid=GENERATING),
    Case("no images", _gen(""), "ValueError", r"wan2.1-flf2v-14b needs init_image \(or continue_from\)",
         forbid=GENERATING),
    Case("continue_from an array", _gen("continue_from=IMG, end_image=IMG"), "TypeError",
         "continue_from must be a wanpy.Video, got ndarray", forbid=GENERATING),
    Case("continue_from and init_image", _gen("continue_from=wanpy.Video(np.zeros((1, 16, 16, 3), np.uint8), 16, 1), "
                                              "init_image=IMG, end_image=IMG"),
         "TypeError", "pass init_image or continue_from, not both", forbid=GENERATING),
    Case("continue_from a video of another size", _gen("continue_from=wanpy.Video(np.zeros((5, 32, 32, 3), "
                                                       "np.uint8), 16, 1), end_image=IMG"),
         "ValueError", "init_image is 32x32 but the video is 16x16", forbid=GENERATING),
]

FAMILIES: dict[str, tuple[str, list[Case]]] = {
    "numbers": (WITH_PIPE, NUMBERS),
    "text": (WITH_PIPE, TEXT),
    "images": (IMAGE_FILES, IMAGES),
    "image pairs": (FLF2V_STUB, PAIRS),
}


@pytest.fixture(scope="module")
def family(kit, tmp_path_factory):
    """One process per pure-validation family, run on first use."""
    outcomes: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in outcomes:
            setup, cases = FAMILIES[name]
            outcomes[name] = run(cases, setup=setup, models=models_of(kit),
                                 tmp=tmp_path_factory.mktemp(name.replace(" ", "-")))
        return outcomes[name]
    return get


@pytest.mark.parametrize("case", [c.param() for c in NUMBERS])
def test_numbers(case, family):
    check(case, family("numbers"))


@pytest.mark.parametrize("case", [c.param() for c in TEXT])
def test_text(case, family):
    check(case, family("text"))


@pytest.mark.parametrize("case", [c.param() for c in IMAGES])
def test_images(case, family):
    check(case, family("images"))


@pytest.mark.parametrize("case", [c.param() for c in PAIRS])
def test_image_pairs(case, family):
    check(case, family("image pairs"))


# --- cases that reach sd.cpp: one process each -----------------------------------------------------
GENERATE_SMALL = "video = pipe.generate_video({prompt}, **{{**SMALL, **dict({kwargs})}})\n" \
                 "assert video.frames.shape == (1, 16, 16, 3), video.frames.shape\nvideo.save(OUT)"


def generates(id: str, kwargs: str = "", prompt: str = "'a red fox'", **extra: Any) -> Case:
    return Case(id, GENERATE_SMALL.format(prompt=prompt, kwargs=kwargs), None, output_expected=True, **extra)


SINGLE = [
    generates("empty prompt", prompt="''"),
    generates("the longest prompt accepted", prompt=f"('a red fox ' * {MAX_TEXT_BYTES})[:{MAX_TEXT_BYTES}]"),
    generates("unicode prompt (CJK, emoji, right-to-left, combining marks)",
              prompt="'狐狸 🦊 ثعلب e\\u0301 ' * 20"),
    generates("the largest seed", "seed=2**63 - 1"),
    Case("scheduler gits with 1 step", _gen("scheduler='gits'"), "ValueError", r"gits.*2 steps", forbid=GENERATING),
    Case("scheduler karras with 1 step", _gen("scheduler='karras'"), "ValueError", r"karras.*steps",
         forbid=GENERATING),
    Case("scheduler exponential with 1 step", _gen("scheduler='exponential'"), "ValueError", r"exponential.*steps",
         forbid=GENERATING),
    Case("scheduler ays on a Wan model", _gen("scheduler='ays', steps=2"), "ValueError", r"ays",
         forbid=GENERATING),
    Case("a LoRA of random bytes", "open(os.path.join(TMP, 'lora.safetensors'), 'wb').write(os.urandom(4096))\n"
         + _gen("loras=[(os.path.join(TMP, 'lora.safetensors'), 1.0)]"), "ModelFileError", r"loras\[0\]",
         forbid=GENERATING),
    Case("a file without LoRA tensors (the VAE)", _gen("loras=[(FILES['vae'], 1.0)]"), "ModelFileError",
         r"loras\[0\]: .* holds no LoRA tensors", forbid=GENERATING),
    Case("num_frames past the VAE encode graph of image-to-video (205)",
         _gen("init_image=IMG, end_image=IMG, num_frames=205"), "ValueError", r"num_frames must be <= 201",
         forbid=GENERATING),
]
# The image-to-video case runs on the FLF2V stub; the others on a loaded pipeline.
_SETUPS = {"num_frames past the VAE encode graph of image-to-video (205)": FLF2V_STUB}


@pytest.mark.parametrize("case", [c.param() for c in SINGLE])
def test_generation_inputs(case, kit, tmp_path):
    check(case, run([case], setup=_SETUPS.get(case.id, WITH_PIPE), models=models_of(kit), tmp=tmp_path))


# --- paths --------------------------------------------------------------------------------------------
def _read_only_output() -> tuple[str, str]:
    """(output path, code making its directory read-only). Root ignores directory modes, so
    as root the output goes into /sys, where the kernel lets no one create a file."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "read-only/out.webm", "os.makedirs(os.path.dirname(OUT))\nos.chmod(os.path.dirname(OUT), 0o555)\n"
    return "/sys/wanpy-reliability-out.webm", ""


_RO_OUT, _RO_SETUP = _read_only_output()
ONE_SHOT = "wanpy.generate_video('a red fox', output=OUT, **FILES, **LOAD, **SMALL)"
PATHS = [
    Case("unicode and spaces in model and output paths", r"""
folder = os.path.join(TMP, "modèles wan 2.1 ☃")
os.makedirs(folder)
for key in ("diffusion_model", "vae"):
    target = os.path.join(folder, "fichier " + os.path.basename(FILES[key]))
    os.link(FILES[key], target)
    FILES[key] = target
os.makedirs(os.path.dirname(OUT))
video = wanpy.generate_video("a red fox", output=OUT, **FILES, **LOAD, **SMALL)
assert video.params["model_files"]["vae"].endswith("fichier wan2.1-vae.safetensors"), video.params["model_files"]
assert wanpy.probe_video(OUT).frame_count == 1
""", None, output="mes vidéos ☃/vidéo 日本 1.webm", output_expected=True),
    Case("output into a missing directory", ONE_SHOT, "FileNotFoundError",
         r"output directory does not exist \(create it first\)", output="missing/out.webm"),
    Case("output into a missing directory, refused before loading", ONE_SHOT, "FileNotFoundError",
         "output directory does not exist", output="missing/out.webm", forbid=LOADING),
    Case("output into a read-only directory", _RO_SETUP + ONE_SHOT, "PermissionError",
         "cannot create a file in the output directory", output=_RO_OUT),
    Case("output into a read-only directory, refused before loading", _RO_SETUP + ONE_SHOT, "PermissionError",
         "cannot create a file in the output directory", output=_RO_OUT, forbid=LOADING),
    Case("output with an unsupported extension, refused before loading", ONE_SHOT, "ValueError",
         r"unsupported video file extension '\.avi'.*supported: \.webm, \.mp4, \.gif", output="out.avi",
         forbid=LOADING),
]


@pytest.mark.parametrize("case", [c.param() for c in PATHS])
def test_paths(case, kit, tmp_path):
    check(case, run([case], setup=COMMON, models=models_of(kit), tmp=tmp_path))


# --- runtime: Ctrl-C, close, threads, failures ------------------------------------------------------
RUNTIME = [
    Case("Ctrl-C while loading", "with ctrl_c_after('loading tensors from', 0.1):\n"
         "    wanpy.generate_video('a red fox', output=OUT, **FILES, **LOAD, **SMALL)",
         "Cancelled", r"loading was interrupted \(Ctrl-C\)",
         then="assert pipeline().generate_video('a red fox', **SMALL).num_frames == 1"),
    Case("Ctrl-C during sampling", "pipe = pipeline()\nevents = []\n"
         "with ctrl_c_after('T2V-1.3B compute buffer size', 0.2):\n"
         "    pipe.generate_video('a red fox', **{**SMALL, 'steps': 30}, callback=events.append).save(OUT)",
         "Cancelled", r"interrupted \(Ctrl-C\)",
         then="assert len(events) < 30, len(events)\n"
              "assert pipe.generate_video('a red fox', **SMALL).num_frames == 1"),
    Case("Ctrl-C during VAE decode", "pipe = pipeline()\n"
         "with ctrl_c_after('wan_vae compute buffer size', 0.3):\n"
         "    pipe.generate_video('a red fox', **{**SMALL, 'width': 64, 'height': 64, 'num_frames': 5}).save(OUT)",
         "Cancelled", r"generation interrupted \(Ctrl-C\)",
         then="assert pipe.generate_video('a red fox', **SMALL).num_frames == 1"),
    # sd.cpp reports a LoRA's loading from the thread that owns its reader threads: a cancel
    # thrown there would end the process (std::terminate); it must wait for the first step
    Case("Ctrl-C while a LoRA loads", "from wanpy.testing import make_lora\n"
         "lora = str(make_lora(os.path.join(TMP, 'lora.safetensors'), FILES['diffusion_model']))\n"
         "pipe = pipeline()\n"
         "with ctrl_c_after('loading LoRA from', 0.0):\n"
         "    pipe.generate_video('a red fox', **SMALL, loras=[(lora, 1.0)]).save(OUT)",
         "Cancelled", r"generation interrupted \(Ctrl-C\)",
         then="assert pipe.generate_video('a red fox', **SMALL, loras=[(lora, 1.0)]).num_frames == 1"),
    # sd.cpp's prompt regex recurses once per byte: 5000 bytes overflowed a 1 MiB thread stack
    # (SIGSEGV, measured); the pre-check compares the prompt with the stack the thread has left
    Case("a long prompt from a thread with a 1 MiB stack", r'''
pipe = pipeline()
box = {}
def work(n):
    try:
        box[n] = pipe.generate_video("a" * n, **SMALL)
    except BaseException as exc:
        box[n] = exc
threading.stack_size(1 << 20)
for n in (1000, 5000):
    t = threading.Thread(target=work, args=(n,))
    t.start()
    t.join()
assert box[1000].num_frames == 1, box[1000]
raise box[5000]
''', "ValueError", r"a prompt of 5000 bytes needs about \d+ KiB of stack .* this thread has \d+ KiB left",
         then="assert pipe.generate_video('a' * 5000, **SMALL).num_frames == 1  # the main thread's 8 MiB"),
    Case("a callback returning numpy's False cancels",
         "pipe = pipeline()\npipe.generate_video('a red fox', **{**SMALL, 'steps': 3}, "
         "callback=lambda p: np.False_).save(OUT)",
         "Cancelled", "cancelled by the callback",
         then="assert pipe.generate_video('a red fox', **SMALL).num_frames == 1"),
    Case("close() from the callback", r'''
pipe = pipeline()
box = {}
def closer(progress):
    try:
        pipe.close()
    except BaseException as exc:
        box["close"] = exc
pipe.generate_video("a red fox", **{**SMALL, "steps": 2}, callback=closer)
assert not pipe.closed, "a refused close() closed the pipeline anyway"
raise box["close"]
''', "GenerationError", "cannot be called from its own progress callback",
         then="assert pipe.generate_video('a red fox', **SMALL).num_frames == 1"),
    Case("fork while another thread generates", r'''
pipe = pipeline()
running, done = threading.Event(), threading.Event()
def work():
    pipe.generate_video("a red fox", **{**SMALL, "steps": 3}, callback=lambda p: running.set() or done.wait(60))
worker = threading.Thread(target=work)
worker.start()
assert running.wait(300), "the generation never started"
child = os.fork()
if child == 0:  # the child inherits the held lock: it must still load and generate
    try:
        code = 0 if pipeline().generate_video("a red fox", **SMALL).num_frames == 1 else 1
    except BaseException:
        code = 2
    os._exit(code)
done.set()
worker.join()
_, status = os.waitpid(child, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
pipe.generate_video("a red fox", **SMALL).save(OUT)
''', None, output_expected=True),
    Case("close() then generate",
         "pipe = pipeline()\npipe.close()\npipe.generate_video('a red fox', **SMALL).save(OUT)",
         "GenerationError", "closed",
         then="assert pipeline().generate_video('a red fox', **SMALL).num_frames == 1"),
    Case("close() from another thread while generating", r'''
pipe = pipeline()
running, box = threading.Event(), {}
def work():
    try:
        box["video"] = pipe.generate_video("a red fox", **{**SMALL, "steps": 3}, callback=lambda p: running.set())
    except BaseException as exc:
        box["error"] = exc
worker = threading.Thread(target=work)
worker.start()
assert running.wait(300), "the generation never started"
pipe.close()
worker.join()
assert "error" not in box, box.get("error")
assert box["video"].frames.shape == (1, 16, 16, 3)
pipe.generate_video("a red fox", **SMALL).save(OUT)
''', "GenerationError", "closed"),
    Case("two pipelines generating from two threads at once", r'''
pipes, videos, errors = [pipeline(), pipeline()], {}, []
def work(i):
    try:
        videos[i] = pipes[i].generate_video("a red fox", **SMALL)
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
np.testing.assert_array_equal(videos[0].frames, videos[1].frames)
videos[0].save(OUT)
''', None, output_expected=True),
    Case("generate after failed generates gives the same frames", r'''
pipe = pipeline()
reference = pipe.generate_video("a red fox", **SMALL)
def stop(progress): return False
def boom(progress): raise RuntimeError("boom")
failures = [(dict(callback=stop, steps=2), wanpy.Cancelled), (dict(callback=boom, steps=2), RuntimeError),
            (dict(width=512, height=512, num_frames=657), wanpy.AllocationTooLargeError),
            (dict(width=17), ValueError), (dict(scheduler="nope"), ValueError)]
for kwargs, expected in failures:
    try:
        pipe.generate_video("a red fox", **{**SMALL, **kwargs})
    except expected:
        pass
    else:
        raise AssertionError(f"{kwargs} did not raise {expected.__name__}")
again = pipe.generate_video("a red fox", **SMALL)
np.testing.assert_array_equal(again.frames, reference.frames)
again.save(OUT)
''', None, output_expected=True),
    Case("generate_video from inside a progress callback", "pipe = pipeline()\n"
         "pipe.generate_video('a red fox', **SMALL, callback=lambda p: pipe.generate_video('a fox', **SMALL))"
         ".save(OUT)",
         "GenerationError", "callback", timeout=30),
]


@pytest.mark.parametrize("case", [c.param() for c in RUNTIME])
def test_runtime(case, kit, tmp_path):
    check(case, run([case], setup=COMMON, models=models_of(kit), tmp=tmp_path))


# --- leaks -------------------------------------------------------------------------------------------
LEAKS = r'''
import json, os, wanpy
from wanpy.testing import cached_model_set
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
def fds():
    return len(os.listdir("/proc/self/fd"))
k = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
pipe = wanpy.WanPipeline(k.diffusion_model, k.vae, n_threads=1)
small = dict(width=16, height=16, num_frames=1, cfg_scale=1.0, progress=False, seed=1)
figures = {"rss_mb": [], "fds": [], "cancelled_rss_mb": [], "cancelled_fds": []}
for i in range(20):
    pipe.generate_video("a red fox", steps=1, **small)
    figures["rss_mb"].append(rss_mb()); figures["fds"].append(fds())
for i in range(20):
    try:
        pipe.generate_video("a red fox", steps=2, callback=lambda p: False, **small)
    except wanpy.Cancelled:
        pass
    else:
        raise AssertionError("not cancelled")
    figures["cancelled_rss_mb"].append(rss_mb()); figures["cancelled_fds"].append(fds())
print("WANPY-LEAKS " + json.dumps(figures))
'''


def test_twenty_generations_and_twenty_cancellations_do_not_leak(record_property):
    proc = subprocess.run([sys.executable, "-c", LEAKS], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(next(line for line in proc.stdout.splitlines()
                              if line.startswith("WANPY-LEAKS ")).split(" ", 1)[1])
    record_property("leaks", figures)
    rss, cancelled = figures["rss_mb"], figures["cancelled_rss_mb"]
    after_second = rss[1]
    assert max(rss[2:] + cancelled) < after_second * 1.05, (
        f"RSS grew more than 5% after the 2nd generation: {after_second:.1f} MB -> "
        f"{max(rss[2:] + cancelled):.1f} MB ({figures})")
    assert set(figures["fds"][1:] + figures["cancelled_fds"]) == {figures["fds"][1]}, figures
