// Context: one loaded set of model files (sd_ctx_t), reused across generations.
#include "wanpy_core.h"

#include <optional>
#include <string>

#include "context.h"

namespace wanpy {

namespace {
const char* opt(const std::optional<std::string>& s) {
    return s ? s->c_str() : nullptr;
}
}  // namespace

Context::Context(std::optional<std::string> diffusion_model, std::optional<std::string> high_noise_diffusion_model,
                 std::optional<std::string> vae, std::optional<std::string> t5xxl,
                 std::optional<std::string> clip_vision, std::optional<std::string> tiny_vae,
                 bool tiny_vae_preview_only, float max_vram_gib, int n_threads, bool vae_decode_only, bool flash_attention,
                 bool offload_params_to_cpu, bool keep_vae_on_cpu, bool keep_clip_on_cpu, bool enable_mmap,
                 bool free_params_immediately, bool vae_conv_direct, std::optional<ProgressCallable> progress) {
    sd_ctx_params_t p;
    sd_ctx_params_init(&p);
    p.diffusion_model_path            = opt(diffusion_model);
    p.high_noise_diffusion_model_path = opt(high_noise_diffusion_model);
    p.vae_path                        = opt(vae);
    p.t5xxl_path                      = opt(t5xxl);
    p.clip_vision_path                = opt(clip_vision);
    p.taesd_path                      = opt(tiny_vae);
    p.tae_preview_only                = tiny_vae_preview_only;
    p.max_vram                        = max_vram_gib;  // 0: no budget
    p.n_threads                       = n_threads;
    p.vae_decode_only                 = vae_decode_only;
    p.free_params_immediately         = free_params_immediately;  // true: one generation, then the weights are gone
    p.flash_attn                      = flash_attention;
    p.diffusion_flash_attn            = flash_attention;
    p.offload_params_to_cpu           = offload_params_to_cpu;
    p.keep_vae_on_cpu                 = keep_vae_on_cpu;
    p.keep_clip_on_cpu                = keep_clip_on_cpu;
    p.enable_mmap                     = enable_mmap;
    p.vae_conv_direct                 = vae_conv_direct;  // Wan's VAE has Conv2d layers; its DiT has none

    // Loading is never interrupted mid-way (sd.cpp would leak what it loaded): a
    // cancel request is honoured as soon as loading returns.
    ProgressRoute route(progress ? py::object(*progress) : py::object(py::none()), /*may_cancel=*/false);
    sd_ctx_t* ctx = nullptr;
    std::string failure;
    {
        py::gil_scoped_release release;
        try {
            ctx = new_sd_ctx(&p);
        } catch (const std::exception& e) {
            failure = e.what();
        } catch (...) {
            failure = "unknown C++ exception";
        }
    }
    if (route.cancelled() && ctx != nullptr) {  // Ctrl-C while loading: honoured once loading returns
        py::gil_scoped_release release;
        free_sd_ctx(ctx);
        ctx = nullptr;
    }
    route.rethrow_if_raised();
    if (!failure.empty()) throw NativeError("loading the models failed: " + failure);
    if (ctx == nullptr) {
        throw NativeError(route.cancelled() ? "loading was cancelled"
                                            : "loading the models failed");  // wanpy adds sd.cpp's logged reason
    }
    ctx_ = ctx;
}

Context::~Context() {
    close();
}

void Context::close() {
    std::lock_guard<std::mutex> lock(in_use_);
    if (sd_ctx_t* ctx = ctx_.exchange(nullptr)) free_sd_ctx(ctx);
}

}  // namespace wanpy

void wanpy::register_context(py::module_& m) {
    py::class_<Context> cls(m, "Context", "Loaded model files (sd.cpp's sd_ctx_t).");
    cls.def(py::init<std::optional<std::string>, std::optional<std::string>, std::optional<std::string>,
                     std::optional<std::string>, std::optional<std::string>, std::optional<std::string>, bool,
                     float, int, bool, bool, bool, bool, bool,
                     bool, bool, bool, std::optional<ProgressCallable>>(),
            py::kw_only(), py::arg("diffusion_model") = py::none(),
            py::arg("high_noise_diffusion_model") = py::none(), py::arg("vae") = py::none(),
            py::arg("t5xxl") = py::none(), py::arg("clip_vision") = py::none(), py::arg("tiny_vae") = py::none(),
            py::arg("tiny_vae_preview_only") = false, py::arg("max_vram_gib") = 0.0f, py::arg("n_threads"),
            py::arg("vae_decode_only") = false, py::arg("flash_attention") = false,
            py::arg("offload_params_to_cpu") = false, py::arg("keep_vae_on_cpu") = false,
            py::arg("keep_clip_on_cpu") = false, py::arg("enable_mmap") = false,
            py::arg("free_params_immediately") = false, py::arg("vae_conv_direct") = false,
            py::arg("progress") = py::none(),
            "Load the models (the GIL released meanwhile). free_params_immediately: sd.cpp frees each model's "
            "weights as soon as the generation is done with it (the text encoder after encoding, the DiT after "
            "sampling, the VAE after decoding), like sd-cli; the context can then generate once. enable_mmap: sd.cpp reads the weight files through mmap. "
            "vae_conv_direct: the VAE's 2-D convolutions run as ggml_conv_2d_direct instead of im2col + matmul. "
            "tiny_vae: a TAEHV file (taesd_path) that encodes and decodes instead of the VAE, or, with "
            "tiny_vae_preview_only, only decodes the previews. max_vram_gib: sd.cpp's max_vram (graph-cut "
            "segments of at most this many GiB, weights streamed from RAM; with offload_params_to_cpu on a GPU).")
        .def("close", &Context::close, py::call_guard<py::gil_scoped_release>(),
             "Free the loaded weights (after a generation running in another thread). Idempotent.");
    register_generation(m, cls);
}
