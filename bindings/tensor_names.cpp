// sd.cpp's own tensor-name conversion, so wanpy can tell before a generation which model
// tensors a LoRA file names (sd.cpp silently applies a LoRA that names none as nothing).
#include "wanpy_core.h"

#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "name_conversion.h"

namespace {

// Every Wan version converts names the same way (only UNet and Flux versions differ).
std::vector<std::string> convert_names(const std::vector<std::string>& names, const std::string& prefix) {
    std::vector<std::string> out;
    out.reserve(names.size());
    for (const auto& name : names) out.push_back(convert_tensor_name(prefix + name, VERSION_WAN2));
    return out;
}

}  // namespace

void wanpy::register_tensor_names(py::module_& m) {
    m.def("convert_tensor_names", &convert_names, py::arg("names"), py::arg("prefix"),
          "The names sd.cpp gives these tensors of a Wan file loaded with `prefix` (\"lora.\" for a LoRA, "
          "\"lora.model.high_noise_\" for a high-noise LoRA, \"model.diffusion_model.\" for the DiT).");
}
