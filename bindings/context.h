// The C++ side of wanpy._core.Context.
#pragma once

#include <pybind11/stl.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>

#include "stable-diffusion.h"
#include "wanpy_core.h"

namespace wanpy {

class Context {
public:
    // Loads the models with the GIL released; `progress` is converted by the caller.
    Context(std::optional<std::string> diffusion_model, std::optional<std::string> high_noise_diffusion_model,
            std::optional<std::string> vae, std::optional<std::string> t5xxl, std::optional<std::string> clip_vision,
            std::optional<std::string> tiny_vae, bool tiny_vae_preview_only, float max_vram_gib, int n_threads, bool vae_decode_only, bool flash_attention, bool offload_params_to_cpu,
            bool keep_vae_on_cpu, bool keep_clip_on_cpu, bool enable_mmap, bool free_params_immediately,
            bool vae_conv_direct, std::optional<ProgressCallable> progress);
    ~Context();
    Context(const Context&)            = delete;
    Context& operator=(const Context&) = delete;

    // Without the GIL: waits for a generation running in another thread, then frees.
    void close();
    // Held (without the GIL) while sd.cpp uses the context, so close() cannot free it then.
    std::mutex& in_use() { return in_use_; }
    sd_ctx_t* get() const { return ctx_.load(); }  // nullptr once closed

private:
    std::atomic<sd_ctx_t*> ctx_{nullptr};
    std::mutex in_use_;
};

// generation.cpp: binds Context.generate and CacheParams (sd.cpp's sd_cache_params_t).
void register_generation(py::module_& m, py::class_<Context>& cls);

}  // namespace wanpy
