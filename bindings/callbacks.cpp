// sd.cpp's log and progress callbacks are process-global: one C++ trampoline each,
// registered once, routing to Python. No Python exception ever unwinds through C
// frames: what a Python callable raises is stashed and re-raised after the native
// call returns.
#include "wanpy_core.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "ggml.h"
#include "stable-diffusion.h"

namespace {

std::atomic<bool> g_log_enabled{false};

// Calls wanpy._core._log_sink(source, level, text) if Python has set it.
void emit(const char* source, const char* level, const std::string& text) {
    if (!g_log_enabled.load() || !Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    try {
        py::module_ core = py::module_::import("wanpy._core");
        py::object sink  = core.attr("_log_sink");
        if (!sink.is_none()) sink(source, level, text);
    } catch (py::error_already_set& e) {
        e.discard_as_unraisable("wanpy log sink");
    }
}

std::string strip_newlines(const char* text) {
    std::string s(text ? text : "");
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

void sd_log_trampoline(sd_log_level_t level, const char* text, void*) {
    const char* name = "info";
    switch (level) {
        case SD_LOG_DEBUG: name = "debug"; break;
        case SD_LOG_INFO: name = "info"; break;
        case SD_LOG_WARN: name = "warning"; break;
        case SD_LOG_ERROR: name = "error"; break;
    }
    emit("sd", name, strip_newlines(text));
}

// ggml's own log before the first model load (device enumeration). Loading makes
// sd.cpp install its ggml callback, which forwards into sd.cpp's log and so to us too.
// ggml prints in pieces (GGML_LOG_LEVEL_CONT): join them into whole lines.
std::mutex g_ggml_mutex;
std::string g_ggml_line;
const char* g_ggml_level = "info";

void ggml_log_trampoline(ggml_log_level level, const char* text, void*) {
    std::string ready;
    const char* ready_level = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_ggml_mutex);
        if (level != GGML_LOG_LEVEL_CONT) {
            switch (level) {
                case GGML_LOG_LEVEL_DEBUG: g_ggml_level = "debug"; break;
                case GGML_LOG_LEVEL_WARN: g_ggml_level = "warning"; break;
                case GGML_LOG_LEVEL_ERROR: g_ggml_level = "error"; break;
                default: g_ggml_level = "info"; break;
            }
        }
        g_ggml_line += text ? text : "";
        if (!g_ggml_line.empty() && g_ggml_line.back() == '\n') {
            ready       = strip_newlines(g_ggml_line.c_str());
            ready_level = g_ggml_level;
            g_ggml_line.clear();
        }
    }
    if (ready_level) emit("ggml", ready_level, ready);
}

// --- progress ---------------------------------------------------------------------
struct RouteState {
    PyObject* fn    = nullptr;  // borrowed from the live ProgressRoute
    bool may_cancel = false;
    bool cancelled  = false;
    std::unique_ptr<py::error_already_set> raised;
};
std::mutex g_route_mutex;  // one route at a time (one generation per process)
RouteState g_route;

void progress_trampoline(int step, int steps, float time, void*) {
    if (g_route.fn == nullptr || !Py_IsInitialized()) return;
    bool stop = false;
    {
        py::gil_scoped_acquire gil;
        if (g_route.cancelled) {
            stop = true;
        } else if (PyErr_CheckSignals() != 0) {  // Ctrl-C while native code runs
            g_route.raised    = std::make_unique<py::error_already_set>();
            g_route.cancelled = stop = true;
        } else {
            try {
                py::object result = py::reinterpret_borrow<py::object>(g_route.fn)(step, steps, time);
                if (result.is(py::bool_(false))) g_route.cancelled = stop = true;
            } catch (py::error_already_set& e) {
                g_route.raised    = std::make_unique<py::error_already_set>(std::move(e));
                g_route.cancelled = stop = true;
            }
        }
    }
    if (stop && g_route.may_cancel) throw wanpy::CancelRequested{};
}

}  // namespace

wanpy::ProgressRoute::ProgressRoute(py::object fn, bool may_cancel) {
    if (!g_route_mutex.try_lock()) {
        throw wanpy::NativeError("another wanpy call is already running in this process");
    }
    g_route.fn         = fn.is_none() ? nullptr : fn.release().ptr();  // owned until the destructor
    g_route.may_cancel = may_cancel;
    g_route.cancelled  = false;
    g_route.raised.reset();
    sd_set_progress_callback(progress_trampoline, nullptr);
}

wanpy::ProgressRoute::~ProgressRoute() {
    sd_set_progress_callback(progress_trampoline, nullptr);
    Py_XDECREF(g_route.fn);
    g_route.fn = nullptr;
    g_route.raised.reset();
    g_route_mutex.unlock();
}

void wanpy::ProgressRoute::rethrow_if_raised() {
    if (g_route.raised) {
        std::unique_ptr<py::error_already_set> err = std::move(g_route.raised);
        throw py::error_already_set(std::move(*err));
    }
}

bool wanpy::ProgressRoute::cancelled() const {
    return g_route.cancelled;
}

void wanpy::register_callbacks(py::module_& m) {
    m.attr("_log_sink") = py::none();
    sd_set_log_callback(sd_log_trampoline, nullptr);
    ggml_log_set(ggml_log_trampoline, nullptr);
    sd_set_progress_callback(progress_trampoline, nullptr);
    m.def("set_log_enabled", [](bool on) { g_log_enabled.store(on); },
          "Route sd.cpp and ggml log lines to wanpy._core._log_sink(source, level, text).");
}
