// The C++ side of wanpy._core.Context.
#pragma once

#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "stable-diffusion.h"
#include "wanpy_core.h"

namespace wanpy {

class Context {
public:
    Context(std::optional<std::string> diffusion_model, std::optional<std::string> high_noise_diffusion_model,
            std::optional<std::string> vae, std::optional<std::string> t5xxl, std::optional<std::string> clip_vision,
            int n_threads, bool vae_decode_only, bool flash_attention, bool offload_params_to_cpu,
            bool keep_vae_on_cpu, bool keep_clip_on_cpu, bool enable_mmap, bool free_params_immediately,
            py::object progress);
    ~Context();
    Context(const Context&)            = delete;
    Context& operator=(const Context&) = delete;

    void close();
    bool closed() const { return ctx_ == nullptr; }
    sd_ctx_t* get() const;

private:
    sd_ctx_t* ctx_ = nullptr;
};

}  // namespace wanpy
