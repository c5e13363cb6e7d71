// Device query: the ggml backend devices this build can run on, with memory figures.
#include "wanpy_core.h"

#include <pybind11/stl.h>

#include <string>

#include "ggml-backend.h"
#include "ggml_extend.hpp"

namespace {

const char* type_name(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "unknown";
    }
}

wanpy::RecordList backend_devices() {
    wanpy::RecordList out;
    size_t count = 0;
    {
        py::gil_scoped_release release;  // the first call initialises drivers
        count = ggml_backend_dev_count();
    }
    for (size_t i = 0; i < count; ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        ggml_backend_dev_props props{};
        ggml_backend_dev_get_props(dev, &props);
        wanpy::Record d;
        d["ggml_index"]   = i;
        d["name"]         = props.name ? props.name : "";
        d["description"]  = props.description ? props.description : "";
        d["type"]         = type_name(props.type);
        d["memory_total"] = props.memory_total;
        d["memory_free"]  = props.memory_free;
        d["backend"]      = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        d["device_id"]    = props.device_id ? py::object(py::str(props.device_id)) : py::object(py::none());
        // The buffer type's alignment and largest buffer, which ggml's allocators use.
        // Vulkan's come from the driver limits (asking ggml would initialise the device).
        d["buffer_alignment"] = py::none();
        d["buffer_max_size"]  = py::none();
        if (std::string(ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev))) != "Vulkan") {
            ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(dev);
            d["buffer_alignment"] = ggml_backend_buft_get_alignment(buft);
            d["buffer_max_size"]  = ggml_backend_buft_get_max_size(buft);
        }
        out.append(d);
    }
    return out;
}

}  // namespace

#if !defined(WANPY_WITH_VULKAN)
wanpy::RecordList wanpy::vulkan_device_limits() {
    return RecordList();  // ggml uses no Vulkan device in this build
}
#endif

void wanpy::register_devices(py::module_& m) {
    m.def("backend_devices", &backend_devices,
          "Every ggml backend device compiled in, in ggml's order, with memory figures.");
    m.def("vulkan_device_limits", &wanpy::vulkan_device_limits,
          "Driver limits of the Vulkan devices ggml uses, in ggml's order (Vulkan0, Vulkan1, ...); empty in "
          "builds without Vulkan.");
    m.def("set_tensor_ceiling", &sd_set_tensor_ceiling, py::arg("device"), py::arg("nbytes"),
          "Tell sd.cpp the largest single tensor the ggml device named `device` can hold (0: no ceiling). "
          "The Wan DiT computes its feed-forward block in token chunks above it (patch 0007), as the "
          "pre-flight measures with the same ceiling.");
    m.def("tensor_ceiling", [](const std::string& device) {
        std::lock_guard<std::mutex> lock(sd_tensor_ceiling_mutex());
        auto it = sd_tensor_ceilings().find(device);
        return it == sd_tensor_ceilings().end() ? size_t{0} : it->second;
    }, py::arg("device"), "The ceiling set_tensor_ceiling gave `device` (0: none).");
}
