// sd.cpp's log and progress callbacks are process-global: one C++ trampoline each,
// registered once, routing to Python. No Python exception ever unwinds through C
// frames: what a Python callable raises is stashed and re-raised after the native
// call returns.
//
// Ctrl-C: while native code runs, Python only notices a SIGINT when it runs Python
// code, which here is the log sink or the progress callable. A KeyboardInterrupt
// raised by the log sink is therefore never discarded: inside a ProgressRoute it is
// remembered (g_interrupted), stops the work at the next progress call and is raised
// when the native call returns; outside one, the signal is re-armed so Python raises
// it as soon as the native call returns.
#include "wanpy_core.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <pthread.h>

#include <atomic>
#include <new>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ggml.h"
#include "stable-diffusion.h"

namespace {

std::atomic<bool> g_log_enabled{false};   // a sink is set (read without the GIL)
PyObject* g_log_sink = nullptr;           // owned; read and written with the GIL held
std::atomic<bool> g_route_active{false};  // a ProgressRoute is alive
std::atomic<bool> g_interrupted{false};   // Ctrl-C seen by the log sink during a route
// sd.cpp's ModelLoader::load_tensors reports progress from the thread that owns its worker
// std::threads: an exception thrown there would destroy them joinable (std::terminate). Its
// log brackets that loop ("loading tensors from", "loading tensors completed"); a cancel
// asked meanwhile waits for the next progress call outside it (sampling starts with one).
std::atomic<bool> g_loading_tensors{false};

void follow_sdcpp_phase(const char* text) {
    if (text == nullptr) return;
    if (std::strstr(text, "loading tensors from ") != nullptr) {
        g_loading_tensors.store(true);
    } else if (std::strstr(text, "loading tensors completed") != nullptr) {
        g_loading_tensors.store(false);
    }
}

// A KeyboardInterrupt caught in the log sink (GIL held): never lost.
void keep_interrupt() {
    if (g_route_active.load()) {
        g_interrupted.store(true);
    } else {
        PyErr_SetInterrupt();  // Python raises it again once the native call returns
    }
}

// Calls the sink set by set_log_sink(source, level, text), if any.
void emit(const char* source, const char* level, const std::string& text) {
    if (!g_log_enabled.load() || !Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    // Run pending signal handlers first, so that Ctrl-C does not cost this log line.
    if (PyErr_CheckSignals() != 0) {
        py::error_already_set pending;
        if (pending.matches(PyExc_KeyboardInterrupt)) {
            keep_interrupt();
        } else {
            pending.discard_as_unraisable("wanpy signal handler");
        }
    }
    if (g_log_sink == nullptr) return;
    // a strong reference: the sink may replace itself while it runs
    py::object sink = py::reinterpret_borrow<py::object>(g_log_sink);
    try {
        sink(source, level, text);
    } catch (py::error_already_set& e) {
        if (e.matches(PyExc_KeyboardInterrupt)) {
            keep_interrupt();
        } else {
            e.discard_as_unraisable("wanpy log sink");
        }
    }
}

std::string strip_newlines(const char* text) {
    std::string s(text ? text : "");
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

void sd_log_trampoline(sd_log_level_t level, const char* text, void*) {
    follow_sdcpp_phase(text);
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
        } else if (g_interrupted.load()) {  // Ctrl-C the log sink caught
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
    if (stop && g_route.may_cancel && !g_loading_tensors.load()) throw wanpy::CancelRequested{};
}

// --- previews -------------------------------------------------------------------------
PyObject* g_preview_fn = nullptr;  // owned while a route routes previews (under g_route_mutex)

// sd.cpp calls it from the sampling loop, next to the progress callback, with frames it frees
// afterwards: they are copied into one array. It never throws into sd.cpp: an exception is
// stashed and stops the work at the next progress call.
void preview_trampoline(int step, int frame_count, sd_image_t* frames, bool is_noisy, void*) {
    if (g_preview_fn == nullptr || !Py_IsInitialized() || frame_count <= 0 || frames == nullptr) return;
    py::gil_scoped_acquire gil;
    if (g_route.cancelled) return;
    const sd_image_t& first = frames[0];
    for (int i = 0; i < frame_count; ++i) {
        const sd_image_t& f = frames[i];
        if (f.data == nullptr || f.channel != 3 || f.width != first.width || f.height != first.height) return;
    }
    try {
        py::array_t<uint8_t> out({static_cast<py::ssize_t>(frame_count), static_cast<py::ssize_t>(first.height),
                                  static_cast<py::ssize_t>(first.width), static_cast<py::ssize_t>(3)});
        const size_t frame_bytes = static_cast<size_t>(first.height) * first.width * 3;
        for (int i = 0; i < frame_count; ++i) std::memcpy(out.mutable_data() + i * frame_bytes, frames[i].data, frame_bytes);
        py::reinterpret_borrow<py::object>(g_preview_fn)(step, out, is_noisy);
    } catch (py::error_already_set& e) {
        g_route.raised    = std::make_unique<py::error_already_set>(std::move(e));
        g_route.cancelled = true;
    }
}

// A child forked while another thread of its parent was inside sd.cpp inherits that thread's
// locks held, by a thread that does not exist in the child: its first load would be refused
// ("another wanpy call is already running") or wait forever. The child starts afresh: new
// locks, no route (the parent's callables are left to the parent; their references leak).
void reset_after_fork() {
    new (&g_route_mutex) std::mutex();
    new (&g_ggml_mutex) std::mutex();
    g_ggml_line.clear();
    g_route.fn = nullptr;
    g_route.may_cancel = false;
    g_route.cancelled  = false;
    (void)g_route.raised.release();
    g_preview_fn = nullptr;
    g_route_active.store(false);
    g_interrupted.store(false);
    g_loading_tensors.store(false);
}
const int g_fork_handler = pthread_atfork(nullptr, nullptr, reset_after_fork);

}  // namespace

void wanpy::ProgressRoute::route_previews(py::object fn, const std::string& mode, int interval, bool denoised,
                                          bool noisy) {
    preview_t m = str_to_preview(mode.c_str());
    if (m == PREVIEW_COUNT || m == PREVIEW_NONE) throw wanpy::NativeError("unknown preview mode '" + mode + "'");
    if (interval < 1) throw wanpy::NativeError("the preview interval must be >= 1");
    Py_XDECREF(g_preview_fn);
    g_preview_fn = fn.release().ptr();
    sd_set_preview_callback(preview_trampoline, m, interval, denoised, noisy, nullptr);
}

wanpy::ProgressRoute::ProgressRoute(py::object fn, bool may_cancel) {
    if (!g_route_mutex.try_lock()) {
        throw wanpy::NativeError("another wanpy call is already running in this process");
    }
    g_route.fn         = fn.is_none() ? nullptr : fn.release().ptr();  // owned until the destructor
    g_route.may_cancel = may_cancel;
    g_route.cancelled  = false;
    g_route.raised.reset();
    g_interrupted.store(false);
    g_loading_tensors.store(false);
    g_route_active.store(true);
    sd_set_progress_callback(progress_trampoline, nullptr);
}

wanpy::ProgressRoute::~ProgressRoute() {
    sd_set_progress_callback(progress_trampoline, nullptr);
    if (g_preview_fn != nullptr) {
        sd_set_preview_callback(nullptr, PREVIEW_NONE, 1, false, false, nullptr);
        Py_DECREF(g_preview_fn);
        g_preview_fn = nullptr;
    }
    Py_XDECREF(g_route.fn);
    g_route.fn = nullptr;
    g_route.raised.reset();
    g_route_active.store(false);
    if (g_interrupted.exchange(false)) PyErr_SetInterrupt();  // not raised (an exception unwound first)
    g_route_mutex.unlock();
}

void wanpy::ProgressRoute::rethrow_if_raised() {
    if (g_route.raised) {
        g_interrupted.store(false);
        std::unique_ptr<py::error_already_set> err = std::move(g_route.raised);
        throw py::error_already_set(std::move(*err));
    }
    if (g_interrupted.exchange(false)) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        throw py::error_already_set();
    }
}

bool wanpy::ProgressRoute::cancelled() const {
    return g_route.cancelled || g_interrupted.load();
}

namespace {

using LogSink = py::typing::Callable<void(std::string, std::string, std::string)>;

void set_log_sink(std::optional<LogSink> sink) {
    PyObject* old = g_log_sink;
    g_log_sink    = sink ? sink->release().ptr() : nullptr;
    g_log_enabled.store(g_log_sink != nullptr);
    Py_XDECREF(old);
}

}  // namespace

void wanpy::register_callbacks(py::module_& m) {
    sd_set_log_callback(sd_log_trampoline, nullptr);
    ggml_log_set(ggml_log_trampoline, nullptr);
    sd_set_progress_callback(progress_trampoline, nullptr);
    m.def("set_log_sink", &set_log_sink, py::arg("sink"),
          "Route sd.cpp and ggml log lines to sink(source, level, text); None stops routing (do so at exit: "
          "native destructors may log while the interpreter shuts down).");
}
