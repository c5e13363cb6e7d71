// wanpy_testhooks: a test-only extension module, never part of the product (wanpy._core).
// bench/CMakeLists.txt builds it from the same patched sd.cpp and ggml, with the same
// backend options, beside sd-cli (bench/build_sdcpp_tools.sh); tests/test_flash_attention.py
// loads it from there.
//
// attention(): sd.cpp's attention (ggml_ext_attention_ext, the function every Wan block calls)
// run on one backend over given Q/K/V, so tests can compare its paths numerically: flash
// attention with unpadded K/V (wanpy patch 0001), upstream's padded K/V
// (WANPY_FLASH_ATTN_PAD_KV=1) and plain softmax attention, on CPU and on Vulkan.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>

#include "ggml-alloc.h"
#include "ggml_extend.hpp"

namespace py = pybind11;

namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

struct BackendFree {
    void operator()(ggml_backend_t b) const { ggml_backend_free(b); }
};
struct ContextFree {
    void operator()(ggml_context* c) const { ggml_free(c); }
};
struct GallocrFree {
    void operator()(ggml_gallocr_t g) const { ggml_gallocr_free(g); }
};

// q: [N, L_q, C], k and v: [N, L_k, C] (row-major, as sd.cpp lays out its activations).
// Returns [N, L_q, C] and the name of the op that computed the scores.
std::tuple<F32Array, std::string> attention(F32Array q, F32Array k, F32Array v, int64_t n_head, bool flash_attn,
                                            const std::string& device) {
    if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3) {
        throw std::invalid_argument("q, k and v must be 3-D: [N, L, C]");
    }
    const int64_t N = q.shape(0), L_q = q.shape(1), C = q.shape(2), L_k = k.shape(1);
    if (k.shape(0) != N || v.shape(0) != N || k.shape(2) != C || v.shape(2) != C || v.shape(1) != L_k) {
        throw std::invalid_argument("k and v must be [N, L_k, C] with q's N and C");
    }
    if (n_head <= 0 || C % n_head != 0) {
        throw std::invalid_argument("n_head must divide C");
    }
    std::unique_ptr<ggml_backend, BackendFree> backend(ggml_backend_init_by_name(device.c_str(), nullptr));
    if (!backend) {
        throw std::invalid_argument("no ggml backend named '" + device + "'");
    }
    ggml_init_params params{ggml_tensor_overhead() * 256 + ggml_graph_overhead(), nullptr, true};
    std::unique_ptr<ggml_context, ContextFree> ctx(ggml_init(params));
    auto input = [&](int64_t L, const char* name) {
        ggml_tensor* t = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, C, L, N);
        ggml_set_name(t, name);
        ggml_set_input(t);
        return t;
    };
    ggml_tensor* tq = input(L_q, "q");
    ggml_tensor* tk = input(L_k, "k");
    ggml_tensor* tv = input(L_k, "v");
    // the constant GGMLRunner provides (upstream's padded path builds its mask from it)
    ggml_tensor* one = ggml_new_tensor_1d(ctx.get(), GGML_TYPE_F32, 1);
    ggml_set_name(one, "ggml_runner_build_in_tensor:one");
    ggml_set_input(one);

    ggml_tensor* out = ggml_ext_attention_ext(ctx.get(), backend.get(), tq, tk, tv, n_head, nullptr, false, flash_attn);
    out = ggml_cont(ctx.get(), out);
    ggml_set_output(out);
    ggml_cgraph* gf = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(gf, out);

    std::string scores_op = "mul_mat";
    for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
        if (ggml_graph_node(gf, i)->op == GGML_OP_FLASH_ATTN_EXT) {
            ggml_tensor* fa = ggml_graph_node(gf, i);
            scores_op = "flash_attn_ext(kv=" + std::to_string(fa->src[1]->ne[1]) +
                        (fa->src[3] ? ", mask)" : ")");
        }
    }

    std::unique_ptr<ggml_gallocr, GallocrFree> galloc(
        ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend.get())));
    if (!ggml_gallocr_alloc_graph(galloc.get(), gf)) {
        throw std::runtime_error("could not allocate the attention graph on " + device);
    }
    ggml_backend_tensor_set(tq, q.data(), 0, ggml_nbytes(tq));
    ggml_backend_tensor_set(tk, k.data(), 0, ggml_nbytes(tk));
    ggml_backend_tensor_set(tv, v.data(), 0, ggml_nbytes(tv));
    const float one_value = 1.0f;
    if (one->buffer != nullptr) {
        ggml_backend_tensor_set(one, &one_value, 0, sizeof(one_value));
    }
    if (ggml_backend_graph_compute(backend.get(), gf) != GGML_STATUS_SUCCESS) {
        throw std::runtime_error("attention graph failed on " + device);
    }
    F32Array result({N, L_q, C});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    return {result, scores_op};
}

}  // namespace

PYBIND11_MODULE(wanpy_testhooks, m) {
    m.doc() = "wanpy test hooks (tests only, not shipped): sd.cpp internals on one ggml backend";
    m.attr("BACKEND")      = WANPY_BACKEND;
    m.attr("SDCPP_SOURCE") = WANPY_SDCPP_SOURCE;
    m.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_head"),
          py::arg("flash_attn"), py::arg("device") = "CPU",
          "sd.cpp's ggml_ext_attention_ext on one backend: (output [N, L_q, C], scores op).");
}
