// Shared declarations of the _core binding files (one file per bound concept).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/typing.h>

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace wanpy {

void register_system(py::module_& m);
void register_devices(py::module_& m);
void register_callbacks(py::module_& m);
void register_context(py::module_& m);  // with Context.generate (generation.cpp)
void register_measure(py::module_& m);
void register_tensor_names(py::module_& m);

// Typed Python values, so that the generated _core.pyi says what they hold.
using Record     = py::typing::Dict<py::str, py::object>;  // dict[str, typing.Any]
using RecordList = py::typing::List<Record>;
// progress(step, steps, seconds_per_step): returning False cancels, anything else continues.
using ProgressCallable = py::typing::Callable<py::object(int, int, float)>;
// (step, frames uint8 (T, H, W, 3), is_noisy)
using PreviewCallable = py::typing::Callable<py::object(int, py::array_t<uint8_t>, bool)>;

// Native failures surface as this (wanpy maps it to its own exception classes).
struct NativeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A generation stopped on request (progress callable returned False or raised).
struct CancelledError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Thrown from inside sd.cpp's progress callback to stop a generation between two
// steps; caught in generation.cpp, never seen by Python as such.
struct CancelRequested {};

// Progress routing (callbacks.cpp). sd.cpp's progress callback is process-global,
// so exactly one Python callable is routed at a time, under a lock.
class ProgressRoute {
public:
    // Routes progress to `fn` (None: nowhere) for the lifetime of this object. When
    // `may_cancel`, a callable that returns False or raises (Ctrl-C included) stops the
    // native work by throwing CancelRequested from the callback. Needs the GIL.
    ProgressRoute(py::object fn, bool may_cancel);
    ~ProgressRoute();
    ProgressRoute(const ProgressRoute&)            = delete;
    ProgressRoute& operator=(const ProgressRoute&) = delete;

    // Also route sd.cpp's previews (mode: "proj", "tae" or "vae"; every `interval` steps; the
    // denoised and/or the noisy latents) to `fn`, until this route ends. What `fn` raises stops
    // the work at the next progress call and is re-raised like the progress callable's.
    void route_previews(py::object fn, const std::string& mode, int interval, bool denoised, bool noisy);

    // After the native call returned: re-raise what the callable raised, if anything.
    void rethrow_if_raised();
    bool cancelled() const;
};

// devices_vulkan.cpp: the driver's own limits for the Vulkan devices ggml uses; an
// empty list in builds without Vulkan (devices.cpp), so both builds have one interface.
RecordList vulkan_device_limits();

}  // namespace wanpy
