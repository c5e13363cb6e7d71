// Build facts: versions, compiled-in backend, environment variables the build reads.
#include "wanpy_core.h"

#include <pybind11/stl.h>

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

}  // namespace

void wanpy::register_system(py::module_& m) {
    m.attr("BACKEND")       = WANPY_BACKEND;
    m.attr("SDCPP_SOURCE")  = WANPY_SDCPP_SOURCE;
    m.def("sdcpp_version", [] { return std::string(sd_version()); },
          "The stable-diffusion.cpp version string compiled in.");
    m.def("sdcpp_commit", [] { return std::string(sd_commit()); });
    m.def("sdcpp_system_info", [] { return std::string(sd_get_system_info()); },
          "sd.cpp's own feature line (SIMD flags and the like).");
    m.def("num_physical_cores", &sd_get_num_physical_cores);
    m.def("env_vars_read", &env_vars_read,
          "Environment variables read (getenv) by the sources compiled into this module.");
    m.def("sample_methods", [] {
        return enum_names([](int i) { return sd_sample_method_name(static_cast<sample_method_t>(i)); },
                          SAMPLE_METHOD_COUNT);
    });
    m.def("schedulers", [] {
        return enum_names([](int i) { return sd_scheduler_name(static_cast<scheduler_t>(i)); },
                          SCHEDULER_COUNT);
    });
}
