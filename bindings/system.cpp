// Build facts: versions, compiled-in backend, environment variables the build reads.
#include "wanpy_core.h"

#include <pybind11/stl.h>

#include <pthread.h>

#include <cstdint>
#include <string>
#include <vector>

#include "stable-diffusion.h"

namespace {

const char* const kEnvVarsRead[] = {
#include "env_vars_read.inc"
    nullptr,
};

std::vector<std::string> env_vars_read() {
    std::vector<std::string> names;
    for (const char* const* p = kEnvVarsRead; *p != nullptr; ++p) {
        names.emplace_back(*p);
    }
    return names;
}

std::vector<std::string> enum_names(const char* (*name_of)(int), int count) {
    std::vector<std::string> names;
    for (int i = 0; i < count; ++i) {
        const char* n = name_of(i);
        names.emplace_back(n ? n : "");
    }
    return names;
}

// Bytes of stack left below this point on the calling thread (-1: unknown). sd.cpp parses
// prompts with a std::regex that recurses once per byte of text (src/util.cpp
// parse_prompt_attention): a long prompt overflows a small thread stack (SIGSEGV).
int64_t thread_stack_left() {
#if defined(__linux__)
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return -1;
    void* base       = nullptr;
    size_t size      = 0;
    const int status = pthread_attr_getstack(&attr, &base, &size);
    pthread_attr_destroy(&attr);
    if (status != 0 || base == nullptr) return -1;
    char here = 0;
    return static_cast<int64_t>(reinterpret_cast<uintptr_t>(&here) - reinterpret_cast<uintptr_t>(base));
#else
    return -1;
#endif
}

// Stack the regex takes per byte of prompt: measured about 260 B (25 000 bytes overflow
// 8 MiB); AddressSanitizer's frames are several times larger (10 000 bytes overflowed 8 MiB).
#if defined(__SANITIZE_ADDRESS__)
constexpr int64_t kPromptStackPerByte = 1024;
#else
constexpr int64_t kPromptStackPerByte = 320;
#endif

}  // namespace

void wanpy::register_system(py::module_& m) {
    m.attr("BACKEND")       = WANPY_BACKEND;
    m.attr("SDCPP_SOURCE")  = WANPY_SDCPP_SOURCE;
    m.def("sdcpp_version", [] { return std::string(sd_version()); },
          "The stable-diffusion.cpp version string compiled in.");
    m.def("sdcpp_system_info", [] { return std::string(sd_get_system_info()); },
          "sd.cpp's own feature line (SIMD flags and the like).");
    m.def("num_physical_cores", &sd_get_num_physical_cores, "sd.cpp's default thread count.");
    m.def("thread_stack_left", &thread_stack_left,
          "Bytes of stack left on the calling thread (-1 where the platform does not say).");
    m.attr("PROMPT_STACK_PER_BYTE") = kPromptStackPerByte;
    m.def("env_vars_read", &env_vars_read,
          "Environment variables read (getenv) by the sources compiled into this module.");
    m.def("sample_methods", [] {
        return enum_names([](int i) { return sd_sample_method_name(static_cast<sample_method_t>(i)); },
                          SAMPLE_METHOD_COUNT);
    }, "sd.cpp's sample method names, in its enum order.");
    m.def("schedulers", [] {
        return enum_names([](int i) { return sd_scheduler_name(static_cast<scheduler_t>(i)); },
                          SCHEDULER_COUNT);
    }, "sd.cpp's scheduler names, in its enum order.");
}
