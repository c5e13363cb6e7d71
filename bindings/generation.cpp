// Context.generate: one call into sd.cpp's generate_video, frames copied into one NumPy
// array and the native frames freed at once. Inputs arrive validated by wanpy (src/wanpy/);
// they are converted with the GIL held, sd.cpp runs without it.
#include "wanpy_core.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "context.h"

namespace wanpy {
namespace {

using Image = py::array_t<uint8_t, py::array::c_style>;
using Lora  = std::tuple<std::string, float, bool>;  // path, multiplier, is_high_noise

sd_image_t as_sd_image(const std::optional<Image>& img) {
    sd_image_t out{0, 0, 0, nullptr};
    if (!img) return out;
    if (img->ndim() != 3 || img->shape(2) != 3) throw NativeError("images must be HxWx3 uint8");
    out.height  = static_cast<uint32_t>(img->shape(0));
    out.width   = static_cast<uint32_t>(img->shape(1));
    out.channel = 3;
    out.data    = const_cast<uint8_t*>(img->data());  // sd.cpp only reads it
    return out;
}

sample_method_t method_of(const std::string& name) {
    sample_method_t m = str_to_sample_method(name.c_str());
    if (m == SAMPLE_METHOD_COUNT) throw NativeError("unknown sample method '" + name + "'");
    return m;
}

scheduler_t scheduler_of(const std::string& name) {
    scheduler_t s = str_to_scheduler(name.c_str());
    if (s == SCHEDULER_COUNT) throw NativeError("unknown scheduler '" + name + "'");
    return s;
}

// sd_cache_mode_t by the names sd-cli's --cache-mode uses
constexpr std::pair<const char*, sd_cache_mode_t> kCacheModes[] = {
    {"disabled", SD_CACHE_DISABLED}, {"easycache", SD_CACHE_EASYCACHE},   {"ucache", SD_CACHE_UCACHE},
    {"dbcache", SD_CACHE_DBCACHE},   {"taylorseer", SD_CACHE_TAYLORSEER}, {"cache-dit", SD_CACHE_CACHE_DIT},
    {"spectrum", SD_CACHE_SPECTRUM},
};

std::string cache_mode_name(sd_cache_mode_t mode) {
    for (const auto& [name, value] : kCacheModes) {
        if (value == mode) return name;
    }
    throw NativeError("unknown cache mode " + std::to_string(static_cast<int>(mode)));
}

sd_cache_mode_t cache_mode_of(const std::string& name) {
    for (const auto& [known, value] : kCacheModes) {
        if (name == known) return value;
    }
    throw NativeError("unknown cache mode '" + name + "'");
}

using Frames = py::array_t<uint8_t, py::array::c_style>;  // (T, H, W, 3)

// sd_image_t views of each frame of a (T, H, W, 3) array (sd.cpp only reads them).
std::vector<sd_image_t> as_sd_frames(const std::optional<Frames>& video) {
    std::vector<sd_image_t> out;
    if (!video) return out;
    if (video->ndim() != 4 || video->shape(3) != 3) throw NativeError("control frames must be (T, H, W, 3) uint8");
    const auto height = static_cast<uint32_t>(video->shape(1)), width = static_cast<uint32_t>(video->shape(2));
    const size_t frame_bytes = static_cast<size_t>(height) * width * 3;
    auto* data               = const_cast<uint8_t*>(video->data());
    for (py::ssize_t i = 0; i < video->shape(0); ++i) out.push_back(sd_image_t{width, height, 3, data + i * frame_bytes});
    return out;
}

struct FreeFrames {
    sd_image_t* frames = nullptr;
    int count          = 0;
    ~FreeFrames() {
        if (!frames) return;
        for (int i = 0; i < count; ++i) std::free(frames[i].data);
        std::free(frames);
    }
};

py::array_t<uint8_t> generate(Context& ctx, const std::string& prompt, const std::string& negative_prompt, int width,
                              int height, int num_frames, int steps, float cfg_scale, float flow_shift,
                              const std::string& sample_method, const std::string& scheduler, int64_t seed,
                              float strength, std::optional<Image> init_image, std::optional<Image> end_image,
                              int high_noise_steps, float high_noise_cfg_scale,
                              const std::string& high_noise_sample_method, const std::string& high_noise_scheduler,
                              float moe_boundary, const std::vector<Lora>& loras, bool vae_tiling, int tile_size_x,
                              int tile_size_y, float tile_overlap, std::optional<ProgressCallable> progress,
                              std::optional<PreviewCallable> preview, const std::string& preview_mode,
                              int preview_every, bool preview_noisy, std::optional<sd_cache_params_t> cache,
                              std::optional<Frames> control_frames, float vace_strength) {
    sd_vid_gen_params_t p;
    sd_vid_gen_params_init(&p);
    p.prompt          = prompt.c_str();
    p.negative_prompt = negative_prompt.c_str();
    p.width           = width;
    p.height          = height;
    p.video_frames    = num_frames;
    p.seed            = seed;
    p.strength        = strength;
    p.moe_boundary    = moe_boundary;
    p.init_image      = as_sd_image(init_image);
    p.end_image       = as_sd_image(end_image);
    std::vector<sd_image_t> control = as_sd_frames(control_frames);
    p.control_frames      = control.empty() ? nullptr : control.data();
    p.control_frames_size = static_cast<int>(control.size());
    p.vace_strength       = vace_strength;

    p.sample_params.sample_steps     = steps;
    p.sample_params.guidance.txt_cfg = cfg_scale;
    p.sample_params.flow_shift       = flow_shift;
    p.sample_params.sample_method    = method_of(sample_method);
    p.sample_params.scheduler        = scheduler_of(scheduler);

    p.high_noise_sample_params.sample_steps     = high_noise_steps;
    p.high_noise_sample_params.guidance.txt_cfg = high_noise_cfg_scale;
    p.high_noise_sample_params.flow_shift       = flow_shift;
    p.high_noise_sample_params.sample_method    = method_of(high_noise_sample_method);
    p.high_noise_sample_params.scheduler        = scheduler_of(high_noise_scheduler);

    std::vector<sd_lora_t> sd_loras;
    for (const auto& [path, multiplier, is_high_noise] : loras) {
        sd_loras.push_back(sd_lora_t{is_high_noise, multiplier, path.c_str()});
    }
    p.loras      = sd_loras.empty() ? nullptr : sd_loras.data();
    p.lora_count = static_cast<uint32_t>(sd_loras.size());

    p.vae_tiling_params.enabled        = vae_tiling;
    p.vae_tiling_params.tile_size_x    = tile_size_x;
    p.vae_tiling_params.tile_size_y    = tile_size_y;
    p.vae_tiling_params.target_overlap = tile_overlap;
    if (cache) {
        p.cache          = *cache;
        p.cache.scm_mask = nullptr;  // not bound: sd.cpp's Wan path never reads it
    }

    if (ctx.get() == nullptr) throw NativeError("the context is closed");
    ProgressRoute route(progress ? py::object(*progress) : py::object(py::none()), /*may_cancel=*/true);
    if (preview) route.route_previews(py::object(*preview), preview_mode, preview_every, !preview_noisy, preview_noisy);
    FreeFrames out;
    std::string failure;
    bool cancelled = false;
    bool closed    = false;
    {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(ctx.in_use());  // close() in another thread waits for us
        try {
            if (ctx.get() == nullptr) {
                closed = true;
            } else {
                out.frames = generate_video(ctx.get(), &p, &out.count);
            }
        } catch (const CancelRequested&) {
            cancelled = true;
        } catch (const std::exception& e) {
            failure = e.what();
        } catch (...) {
            failure = "unknown C++ exception";
        }
    }
    route.rethrow_if_raised();
    if (closed) throw NativeError("the context is closed");
    if (cancelled || route.cancelled()) throw CancelledError("generation cancelled");
    if (!failure.empty()) throw NativeError("generation failed inside sd.cpp: " + failure);
    if (out.frames == nullptr || out.count <= 0) {
        throw NativeError("generation failed (sd.cpp returned no frames; see the wanpy log for its reason)");
    }

    const sd_image_t& first = out.frames[0];
    for (int i = 0; i < out.count; ++i) {
        const sd_image_t& f = out.frames[i];
        if (f.data == nullptr || f.channel != 3 || f.width != first.width || f.height != first.height) {
            throw NativeError("sd.cpp returned an inconsistent frame " + std::to_string(i));
        }
    }
    py::array_t<uint8_t> frames({static_cast<py::ssize_t>(out.count), static_cast<py::ssize_t>(first.height),
                                 static_cast<py::ssize_t>(first.width), static_cast<py::ssize_t>(3)});
    const size_t frame_bytes = static_cast<size_t>(first.height) * first.width * 3;
    uint8_t* dst             = frames.mutable_data();
    for (int i = 0; i < out.count; ++i) std::memcpy(dst + i * frame_bytes, out.frames[i].data, frame_bytes);
    return frames;
}

}  // namespace
}  // namespace wanpy

void wanpy::register_generation(py::module_& m, py::class_<Context>& cls) {
    using C = sd_cache_params_t;
    py::class_<C>(m, "CacheParams",
                  "sd.cpp's sd_cache_params_t (step caching), initialised by sd_cache_params_init; the fields "
                  "keep the engine's names. scm_mask is not bound (no Wan path reads it).")
        .def(py::init([]() {
            C p;
            sd_cache_params_init(&p);
            return p;
        }))
        .def_property(
            "mode", [](const C& p) { return cache_mode_name(p.mode); },
            [](C& p, const std::string& name) { p.mode = cache_mode_of(name); },
            "disabled, easycache, ucache, dbcache, taylorseer, cache-dit or spectrum")
        .def_readwrite("reuse_threshold", &C::reuse_threshold)
        .def_readwrite("start_percent", &C::start_percent)
        .def_readwrite("end_percent", &C::end_percent)
        .def_readwrite("error_decay_rate", &C::error_decay_rate)
        .def_readwrite("use_relative_threshold", &C::use_relative_threshold)
        .def_readwrite("reset_error_on_compute", &C::reset_error_on_compute)
        .def_readwrite("Fn_compute_blocks", &C::Fn_compute_blocks)
        .def_readwrite("Bn_compute_blocks", &C::Bn_compute_blocks)
        .def_readwrite("residual_diff_threshold", &C::residual_diff_threshold)
        .def_readwrite("max_warmup_steps", &C::max_warmup_steps)
        .def_readwrite("max_cached_steps", &C::max_cached_steps)
        .def_readwrite("max_continuous_cached_steps", &C::max_continuous_cached_steps)
        .def_readwrite("taylorseer_n_derivatives", &C::taylorseer_n_derivatives)
        .def_readwrite("taylorseer_skip_interval", &C::taylorseer_skip_interval)
        .def_readwrite("scm_policy_dynamic", &C::scm_policy_dynamic)
        .def_readwrite("spectrum_w", &C::spectrum_w)
        .def_readwrite("spectrum_m", &C::spectrum_m)
        .def_readwrite("spectrum_lam", &C::spectrum_lam)
        .def_readwrite("spectrum_window_size", &C::spectrum_window_size)
        .def_readwrite("spectrum_flex_window", &C::spectrum_flex_window)
        .def_readwrite("spectrum_warmup_steps", &C::spectrum_warmup_steps)
        .def_readwrite("spectrum_stop_percent", &C::spectrum_stop_percent);

    cls.def("generate", &generate, py::kw_only(), py::arg("prompt"), py::arg("negative_prompt"), py::arg("width"),
            py::arg("height"), py::arg("num_frames"), py::arg("steps"), py::arg("cfg_scale"), py::arg("flow_shift"),
            py::arg("sample_method"), py::arg("scheduler"), py::arg("seed"), py::arg("strength"),
            py::arg("init_image") = py::none(), py::arg("end_image") = py::none(), py::arg("high_noise_steps"),
            py::arg("high_noise_cfg_scale"), py::arg("high_noise_sample_method"), py::arg("high_noise_scheduler"),
            py::arg("moe_boundary"), py::arg("loras"), py::arg("vae_tiling"), py::arg("tile_size_x"),
            py::arg("tile_size_y"), py::arg("tile_overlap"), py::arg("progress") = py::none(),
            py::arg("preview") = py::none(), py::arg("preview_mode") = "proj", py::arg("preview_every") = 1,
            py::arg("preview_noisy") = false, py::arg("cache") = py::none(),
            py::arg("control_frames") = py::none(), py::arg("vace_strength") = 1.0f,
            "Run sd.cpp's generate_video (the GIL released meanwhile); returns frames as uint8 (T, H, W, 3). "
            "loras: (path, multiplier, is_high_noise). preview(step, frames, is_noisy) receives sd.cpp's previews "
            "(preview_mode proj, tae or vae) every preview_every steps, of the denoised latents (or, with "
            "preview_noisy, the noisy ones). cache: sd.cpp's step cache for both experts. control_frames (T, H, W, 3) "
            "uint8 and vace_strength: a VACE DiT's control video (init_image is then its reference image). Raises Cancelled when progress returned False or raised, "
            "NativeError when sd.cpp failed or the context is closed.");
}
