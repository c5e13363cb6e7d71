// wanpy._core: the thin typed layer over the stable-diffusion.cpp C API.
// Users never import it directly; src/wanpy/ wraps it. Its interface is src/wanpy/_core.pyi,
// generated from this module by scripts/check_stubs.py --write.
#include "wanpy_core.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "wanpy's native core: stable-diffusion.cpp and ggml, statically linked";
    py::register_exception<wanpy::NativeError>(m, "NativeError", PyExc_RuntimeError);
    py::register_exception<wanpy::CancelledError>(m, "Cancelled", PyExc_RuntimeError);
    wanpy::register_system(m);
    wanpy::register_devices(m);
    wanpy::register_callbacks(m);
    wanpy::register_context(m);
    wanpy::register_measure(m);
    wanpy::register_tensor_names(m);
}
