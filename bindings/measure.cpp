// Pre-flight measurement: sd.cpp's own runners (the same classes new_sd_ctx builds)
// construct their real graphs over a weightless parameter context, and ggml's graph
// allocator sizes them without allocating anything (ggml_gallocr_reserve_n_size).
// Headers are read by sd.cpp's own ModelLoader, so version detection, name conversion
// and the weight types sd.cpp chooses are the engine's, not a re-implementation.
//
// The buffer type is a measuring one: the alignment and chunk size of the target
// device (Vulkan: minStorageBufferOffsetAlignment and the sub-allocation block),
// nbytes per tensor like every ggml backend wanpy builds. Nothing is ever allocated.
//
// Header reading and graph building run without the GIL, one measurement at a time in
// the process (as the GIL had them): arguments are converted before, results after.
#include "wanpy_core.h"

#include <pthread.h>

#include <new>

#include <pybind11/stl.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "conditioner.hpp"
#include "ggml-alloc.h"
#include "ggml-backend-impl.h"
#include "ggml_graph_cut.h"
#include "model.h"
#include "vae.hpp"
#include "wan.hpp"

// tae.hpp uses vae.hpp without including it, and defines patchify()/unpatchify() as plain
// functions that stable-diffusion.cpp defines too: in an unnamed namespace they are this file's own
// (its classes are only measured here, never passed to sd.cpp).
namespace {
#include "tae.hpp"
}  // namespace

namespace wanpy {
namespace {

// --- a buffer type that only answers questions ------------------------------------
struct MeasureBufferType {
    size_t alignment;
    size_t max_size;
    ggml_backend_buffer_type buft;

    MeasureBufferType(size_t alignment_, size_t max_size_) : alignment(alignment_), max_size(max_size_) {
        buft.iface   = {
            /* .get_name       = */ [](ggml_backend_buffer_type_t) { return "wanpy-measure"; },
            /* .alloc_buffer   = */ [](ggml_backend_buffer_type_t, size_t) -> ggml_backend_buffer_t { return nullptr; },
            /* .get_alignment  = */
            [](ggml_backend_buffer_type_t b) { return static_cast<MeasureBufferType*>(b->context)->alignment; },
            /* .get_max_size   = */
            [](ggml_backend_buffer_type_t b) { return static_cast<MeasureBufferType*>(b->context)->max_size; },
            /* .get_alloc_size = */ nullptr,  // nbytes
            /* .is_host        = */ nullptr,
        };
        buft.device  = nullptr;
        buft.context = this;
    }
};

// One measured graph (or weight set).
struct Measured {
    size_t total         = 0;  // bytes ggml would allocate for it, over all chunks
    size_t largest       = 0;  // the largest single tensor in it (aligned)
    std::string name;          // that tensor's name
    std::string op;            // and the op that produces it ("weight" for weights)
    std::vector<int64_t> shape;
    ggml_type type = GGML_TYPE_F32;
};

size_t aligned(size_t n, size_t a) { return (n + a - 1) / a * a; }

void consider(Measured& m, const ggml_tensor* t, size_t alignment, const char* op) {
    size_t n = aligned(ggml_nbytes(t), alignment);
    if (n <= m.largest) return;
    m.largest = n;
    m.name    = t->name;
    m.op      = op;
    m.type    = t->type;
    m.shape.assign(t->ne, t->ne + ggml_n_dims(t));
}

bool owns_memory(const ggml_tensor* t) { return t->data == nullptr && t->view_src == nullptr; }

// The largest tensor a graph's compute buffer holds: its unallocated leaves and nodes.
void consider_graph(Measured& m, ggml_cgraph* gf, size_t alignment) {
    for (int i = 0; i < sd::ggml_graph_cut::leaf_count(gf); ++i) {
        ggml_tensor* t = sd::ggml_graph_cut::leaf_tensor(gf, i);
        if (owns_memory(t)) consider(m, t, alignment, "input");
    }
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        ggml_tensor* t = ggml_graph_node(gf, i);
        if (owns_memory(t)) consider(m, t, alignment, ggml_op_desc(t));
    }
}

size_t reserve_size(ggml_cgraph* gf, const MeasureBufferType& mb) {
    size_t n              = 0;
    ggml_gallocr_t galloc = ggml_gallocr_new(const_cast<ggml_backend_buffer_type*>(&mb.buft));
    ggml_gallocr_reserve_n_size(galloc, gf, nullptr, nullptr, &n);
    ggml_gallocr_free(galloc);
    return n;
}

// --- max_vram: sd.cpp's graph-cut planner, measured ------------------------------
// With max_vram (and offload_params_to_cpu on a device backend) GGMLRunner::compute plans the
// graph with sd::ggml_graph_cut::build_plan + apply_max_vram_budget and, when more than one
// segment remains, runs it segment by segment (compute_with_graph_cuts): per segment one device
// buffer for its params, one compute buffer, and the cache buffers of the cut outputs later
// segments read. Here sd.cpp's own planner runs unchanged over the weightless graph, and that
// run is replayed in sizes only.

// The planner asks the backend only for its default buffer type (ggml_graph_cut.cpp's
// measure_segment_compute_buffer): a backend whose device answers with the measuring one.
struct PlanBackend {
    ggml_backend_device dev{};
    ggml_backend backend{};
    ggml_guid guid{};  // not the CPU's; never computed on

    explicit PlanBackend(const MeasureBufferType& mb) {
        dev.iface.get_buffer_type = [](ggml_backend_dev_t d) { return static_cast<ggml_backend_buffer_type_t>(d->context); };
        dev.context     = const_cast<ggml_backend_buffer_type*>(&mb.buft);
        backend.guid    = &guid;
        backend.device  = &dev;
        backend.context = nullptr;
    }
    ggml_backend_t get() { return &backend; }
};

struct PlannedSegment {
    std::string name;    // sd.cpp's segment name ("a..b" when merged)
    size_t params  = 0;  // its params' device buffer ("offload partial params")
    size_t compute = 0;  // its compute buffer, the cut inputs bound to the cache
    size_t cache_in  = 0;  // the cache buffer alive when it starts
    size_t cache_out = 0;  // the cache buffer written after it ("cache backend buffer size"; 0: none)
    size_t planned = 0;  // what sd.cpp compared with the budget (graph_cut_segment_vram_bytes)
};

struct Planned {
    bool segmented         = false;  // false: sd.cpp's ordinary path (all weights + one compute buffer)
    int base_segments      = 0;
    int segments           = 1;
    size_t smallest_budget = 0;  // the largest planned need of a base segment
    size_t device_peak     = 0;
    size_t largest_params  = 0;
    size_t largest_compute = 0;
    size_t largest_cache   = 0;
    Measured tensors;            // the largest tensor in any compute buffer
    std::vector<PlannedSegment> per_segment;
};

size_t planned_bytes(const sd::ggml_graph_cut::Segment& s) {
    return s.compute_buffer_size + s.input_param_bytes + s.input_previous_cut_bytes + s.output_bytes;
}

// What ggml_backend_alloc_ctx_tensors would allocate for copies of these tensors.
size_t tensors_size(const std::vector<ggml_tensor*>& tensors, const MeasureBufferType& mb) {
    if (tensors.empty()) return 0;
    ggml_init_params ip = {tensors.size() * ggml_tensor_overhead() + 1024, nullptr, true};
    ggml_context* ctx   = ggml_init(ip);
    for (ggml_tensor* t : tensors) ggml_dup_tensor(ctx, t);
    size_t n = ggml_backend_alloc_ctx_tensors_from_buft_size(ctx, const_cast<ggml_backend_buffer_type*>(&mb.buft));
    ggml_free(ctx);
    return n;
}

// A segment's compute buffer at run time: its previous-cut inputs are bound to the cache
// (GGMLRunner::bind_segment_cached_inputs), so the allocator does not place them.
size_t segment_compute(ggml_cgraph* gf, const sd::ggml_graph_cut::Segment& seg, const MeasureBufferType& mb) {
    namespace gc = sd::ggml_graph_cut;
    if (seg.internal_node_indices.empty()) return 0;
    alignas(64) static char bound[64];
    std::vector<std::pair<ggml_tensor*, void*>> saved;
    for (const auto& in : seg.input_refs) {
        if (in.type != gc::Segment::INPUT_PREVIOUS_CUT) continue;
        ggml_tensor* t = gc::input_tensor(gf, in);
        if (t == nullptr) continue;
        saved.emplace_back(t, t->data);
        t->data = bound;
    }
    ggml_context* gctx = nullptr;
    ggml_cgraph* sg    = gc::build_segment_graph(gf, seg, &gctx);
    size_t n           = reserve_size(sg, mb);
    ggml_free(gctx);
    for (auto& [t, d] : saved) t->data = d;
    return n;
}

// gf: a runner's graph over weightless params; params: its parameter tensors. Fills all but
// the ordinary path's weights (the caller's: they need the placeholders gone).
Planned plan_graph(ggml_cgraph* gf, const std::unordered_set<const ggml_tensor*>& params, size_t budget,
                   const MeasureBufferType& mb) {
    namespace gc = sd::ggml_graph_cut;
    PlanBackend backend(mb);
    Planned m;
    gc::Plan base   = gc::build_plan(backend.get(), gf, params, nullptr);  // no log_desc: no INFO lines
    m.base_segments = static_cast<int>(base.segments.size());
    for (const auto& s : base.segments) m.smallest_budget = std::max(m.smallest_budget, planned_bytes(s));
    gc::Plan p = gc::apply_max_vram_budget(gf, base, budget, backend.get(), params, nullptr);
    // GGMLRunner::should_use_graph_cut_segmented_compute
    m.segmented = p.has_cuts && p.valid && p.segments.size() > 1;
    consider_graph(m.tensors, gf, mb.alignment);
    if (!m.segmented) {
        // the ordinary path runs this same graph, its cut outputs now flagged as outputs
        m.largest_compute = reserve_size(gf, mb);
        m.device_peak     = m.largest_compute;
        return m;
    }
    m.segments = static_cast<int>(p.segments.size());
    // replay compute_with_graph_cuts / copy_cache_tensors_to_cache_buffer
    std::map<std::string, ggml_tensor*> cache;  // name -> source tensor
    size_t cache_bytes = 0;
    for (size_t k = 0; k < p.segments.size(); ++k) {
        const auto& s = p.segments[k];
        PlannedSegment b;
        b.name     = s.group_name;
        b.planned  = planned_bytes(s);
        b.params   = tensors_size(gc::param_tensors(gf, s), mb);
        b.compute  = segment_compute(gf, s, mb);
        b.cache_in = cache_bytes;
        auto keep  = gc::collect_future_input_names(gf, p, k);
        std::map<std::string, ggml_tensor*> next;
        for (auto& [n, t] : cache)
            if (keep.count(n)) next[n] = t;
        if (k + 1 < p.segments.size()) {
            for (size_t o = 0; o < s.output_node_indices.size(); ++o) {
                ggml_tensor* t = gc::output_tensor(gf, s, o);
                if (t && gc::is_graph_cut_tensor(t) && keep.count(t->name)) next[t->name] = gc::cache_source_tensor(t);
            }
        }
        std::vector<ggml_tensor*> kept;
        for (auto& [n, t] : next) kept.push_back(t);
        b.cache_out = tensors_size(kept, mb);
        cache.swap(next);
        cache_bytes = b.cache_out;

        m.device_peak     = std::max(m.device_peak, b.params + b.compute + b.cache_in + b.cache_out);
        m.largest_params  = std::max(m.largest_params, b.params);
        m.largest_compute = std::max(m.largest_compute, b.compute);
        m.largest_cache   = std::max(m.largest_cache, b.cache_out);
        m.per_segment.push_back(std::move(b));
    }
    return m;
}

// Runner -> runner with access to its graph building and parameter context.
template <class Runner>
struct Probe : Runner {
    using Runner::Runner;
    ~Probe() { forget_placeholders(); }

    Measured weights(const MeasureBufferType& mb) {
        forget_placeholders();  // the weight allocator sizes unallocated tensors only
        Measured m;
        m.total = ggml_backend_alloc_ctx_tensors_from_buft_size(this->params_ctx, const_cast<ggml_backend_buffer_type*>(&mb.buft));
        for (ggml_tensor* t = ggml_get_first_tensor(this->params_ctx); t; t = ggml_get_next_tensor(this->params_ctx, t)) {
            consider(m, t, mb.alignment, "weight");
        }
        return m;
    }

    // Weights are never loaded: give them a placeholder address so that the graph
    // allocator treats them as allocated, exactly as after a real load.
    void make_weightless() {
        alignas(64) static char placeholder[64];
        for (ggml_tensor* t = ggml_get_first_tensor(this->params_ctx); t; t = ggml_get_next_tensor(this->params_ctx, t)) {
            t->data = placeholder;
        }
    }

    void forget_placeholders() {
        for (ggml_tensor* t = ggml_get_first_tensor(this->params_ctx); t; t = ggml_get_next_tensor(this->params_ctx, t)) {
            t->data = nullptr;
        }
    }

    Measured graph(const std::function<ggml_cgraph*()>& build, const MeasureBufferType& mb) {
        make_weightless();
        ggml_cgraph* gf = nullptr;
        if (!this->prepare_compute_graph(build, &gf)) throw NativeError(this->get_desc() + ": graph could not be built");
        Measured m;
        m.total = reserve_size(gf, mb);
        consider_graph(m, gf, mb.alignment);
        this->free_compute_ctx();
        return m;
    }

    // sd.cpp's max_vram plan of the graph build makes, for a budget in bytes. The planner flags the
    // graph's cut tensors as outputs; the graph is freed here and every measurement builds its own.
    // The parameter set is the runner's params_ctx (what alloc_params_buffer would register), kept
    // local: the runner's params_tensor_set_ stays as it was.
    Planned plan(const std::function<ggml_cgraph*()>& build, size_t budget, const MeasureBufferType& mb) {
        make_weightless();
        std::unordered_set<const ggml_tensor*> params;
        for (ggml_tensor* t = ggml_get_first_tensor(this->params_ctx); t; t = ggml_get_next_tensor(this->params_ctx, t)) {
            params.insert(t);
        }
        ggml_cgraph* gf = nullptr;
        if (!this->prepare_compute_graph(build, &gf)) throw NativeError(this->get_desc() + ": graph could not be built");
        Planned p = plan_graph(gf, params, budget, mb);
        this->free_compute_ctx();
        if (!p.segmented) {  // offload_all_params: the whole weight set to the device
            p.largest_params = weights(mb).total;
            p.device_peak += p.largest_params;
        }
        return p;
    }
};

// WanRunner::build_graph, less the rotary table's values: computing them (gen_wan_pe)
// takes most of the time at 14B sizes and does not change what is allocated. The
// table's shape is gen_vid_ids' position count; the CPU grid test checks that this graph
// and sd.cpp's own allocate the same compute buffer.
struct DiT : Probe<WAN::WanRunner> {
    using Probe<WAN::WanRunner>::Probe;

    ggml_cgraph* build_measure_graph(const sd::Tensor<float>& x_tensor, const sd::Tensor<float>& timesteps_tensor,
                                     const sd::Tensor<float>& context_tensor, const sd::Tensor<float>& clip_fea_tensor,
                                     const sd::Tensor<float>& c_concat_tensor,
                                     const sd::Tensor<float>& vace_context_tensor, size_t tensor_ceiling) {
        ggml_cgraph* gf        = new_graph_custom(WAN::WAN_GRAPH_SIZE);
        ggml_tensor* x         = make_input(x_tensor);
        ggml_tensor* timesteps = make_input(timesteps_tensor);
        ggml_tensor* context   = make_optional_input(context_tensor);
        ggml_tensor* clip_fea  = make_optional_input(clip_fea_tensor);
        ggml_tensor* c_concat  = make_optional_input(c_concat_tensor);
        ggml_tensor* vace      = make_optional_input(vace_context_tensor);

        auto [pt, ph, pw] = wan_params.patch_size;
        int64_t pos_len   = ((x->ne[2] + pt / 2) / pt) * ((x->ne[1] + ph / 2) / ph) * ((x->ne[0] + pw / 2) / pw);
        auto pe = ggml_new_tensor_4d(compute_ctx, GGML_TYPE_F32, 2, 2, wan_params.axes_dim_sum / 2, pos_len);
        if (c_concat != nullptr) x = ggml_concat(compute_ctx, x, c_concat, 3);
        auto runner_ctx           = get_context();
        runner_ctx.tensor_ceiling = tensor_ceiling;  // the target device's, as a real run registers it
        ggml_tensor* out = wan.forward(&runner_ctx, x, timesteps, context, pe, clip_fea, nullptr, vace, 1.f);
        ggml_build_forward_expand(gf, out);
        return gf;
    }
};
using WanVAE     = Probe<WAN::WanVAERunner>;
using TextT5     = Probe<T5Runner>;
using ClipVision = Probe<FrozenCLIPVisionEmbedder>;
using TinyVae    = Probe<TinyVideoAutoEncoder>;

// ModelLoader with the synthetic tensors of a preset added like a file's.
struct Loader : ModelLoader {
    void add(const std::string& name, ggml_type type, const std::vector<int64_t>& ne) {
        add_tensor_storage(TensorStorage(name, type, ne.data(), static_cast<int>(ne.size()), 0));
    }
};

sd::Tensor<float> zeros(const std::vector<int64_t>& shape) { return sd::Tensor<float>::zeros(shape); }

Record as_record(const Measured& m) {
    Record d;
    d["total"]   = m.total;
    d["largest"] = m.largest;
    d["name"]    = m.name;
    d["op"]      = m.op;
    d["shape"]   = m.shape;
    d["type"]    = std::string(ggml_type_name(m.type));
    return d;
}

Record as_record(const Planned& p) {
    Record d;
    d["segmented"]       = p.segmented;
    d["segments"]        = p.segments;
    d["base_segments"]   = p.base_segments;
    d["smallest_budget"] = p.smallest_budget;
    d["device_peak"]     = p.device_peak;
    d["largest_params"]  = p.largest_params;
    d["largest_compute"] = p.largest_compute;
    d["largest_cache"]   = p.largest_cache;
    d["largest_tensor"]       = p.tensors.largest;
    d["largest_tensor_name"]  = p.tensors.name;
    d["largest_tensor_shape"] = p.tensors.shape;
    d["largest_tensor_type"]  = std::string(ggml_type_name(p.tensors.type));
    py::list segments;
    for (const auto& s : p.per_segment) {
        Record e;
        e["name"]      = s.name;
        e["params"]    = s.params;
        e["compute"]   = s.compute;
        e["cache_in"]  = s.cache_in;
        e["cache_out"] = s.cache_out;
        e["planned"]   = s.planned;
        segments.append(std::move(e));
    }
    d["per_segment"] = std::move(segments);
    return d;
}

// Runs fn without the GIL, one measurement at a time (the lock is taken without the GIL:
// sd.cpp logs, and the log sink needs the GIL back). Python objects stay untouched.
std::mutex g_measure_mutex;
// a child forked mid-measurement would inherit the lock held (see callbacks.cpp)
const int g_measure_fork_handler = pthread_atfork(nullptr, nullptr, [] { new (&g_measure_mutex) std::mutex(); });
template <class Fn>
auto measuring(Fn&& fn) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g_measure_mutex);
    return fn();
}

// A set of model files (or preset tensors) as sd.cpp would load them, with one runner
// per component, built lazily and kept weightless. Never touches Python objects.
class Session {
public:
    Session(const std::vector<std::tuple<std::string, std::string>>& files,
            const std::vector<std::tuple<std::string, int, std::vector<int64_t>>>& tensors)
        : backend_(ggml_backend_cpu_init()) {
        for (const auto& [path, prefix] : files) {
            if (!loader_.init_from_file(path, prefix)) throw NativeError("sd.cpp could not read the header of " + path);
        }
        for (const auto& [name, type, ne] : tensors) {
            if (type < 0 || type >= GGML_TYPE_COUNT) throw NativeError("bad ggml type for " + name);
            loader_.add(name, static_cast<ggml_type>(type), ne);
        }
        loader_.convert_tensors_name();
        version_ = loader_.get_sd_version();
        if (version_ == VERSION_COUNT) throw NativeError("sd.cpp does not recognise these model files");
    }

    ~Session() {
        dit_.reset();
        high_noise_.reset();
        vae_.reset();
        vae_decoder_.reset();
        t5_.reset();
        clip_vision_.reset();
        tae_.reset();
        tae_decoder_.reset();
        ggml_backend_free(backend_);
    }

    bool has(const std::string& prefix) {
        for (const auto& [name, _] : loader_.get_tensor_storage_map()) {
            if (starts_with(name, prefix)) return true;
        }
        return false;
    }

    std::string dit_desc(bool high_noise) { return dit(high_noise).get_desc(); }

    Measured weights(const std::string& component, size_t alignment, size_t max_size) {
        MeasureBufferType mb(alignment, max_size);
        if (component == "diffusion_model") return dit(false).weights(mb);
        if (component == "high_noise_diffusion_model") return dit(true).weights(mb);
        if (component == "vae") return vae().weights(mb);
        if (component == "vae decoder") return vae(true).weights(mb);  // built with vae_decode_only
        if (component == "text_encoder") return t5().weights(mb);
        if (component == "clip_vision") return clip_vision().weights(mb);
        if (component == "tiny_vae") return tae().weights(mb);
        if (component == "tiny_vae decoder") return tae(true).weights(mb);
        throw NativeError("unknown component " + component);
    }

    Measured dit_graph(bool high_noise, const std::vector<int64_t>& x, const std::vector<int64_t>& context,
                       const std::vector<int64_t>& clip_fea, const std::vector<int64_t>& c_concat,
                       const std::vector<int64_t>& vace_context, int64_t timesteps, bool flash_attention, size_t alignment, size_t max_size,
                       size_t tensor_ceiling) {
        MeasureBufferType mb(alignment, max_size);
        DiT& r = dit(high_noise);
        r.set_flash_attention_enabled(flash_attention);
        DitInputs in(x, context, clip_fea, c_concat, vace_context, timesteps);
        return r.graph([&]() { return in.build(r, tensor_ceiling); }, mb);
    }

    Planned dit_plan(bool high_noise, const std::vector<int64_t>& x, const std::vector<int64_t>& context,
                     const std::vector<int64_t>& clip_fea, const std::vector<int64_t>& c_concat,
                     const std::vector<int64_t>& vace_context, int64_t timesteps, bool flash_attention, size_t alignment,
                     size_t max_size, size_t tensor_ceiling, size_t budget) {
        MeasureBufferType mb(alignment, max_size);
        DiT& r = dit(high_noise);
        r.set_flash_attention_enabled(flash_attention);
        DitInputs in(x, context, clip_fea, c_concat, vace_context, timesteps);
        return r.plan([&]() { return in.build(r, tensor_ceiling); }, budget, mb);
    }

    Measured vae_graph(bool decode, const std::vector<int64_t>& input, bool flash_attention, size_t alignment,
                       size_t max_size, bool conv_direct) {
        MeasureBufferType mb(alignment, max_size);
        WanVAE& r = vae();
        r.set_flash_attention_enabled(flash_attention);
        r.set_conv2d_direct_enabled(conv_direct);
        auto z = zeros(input);
        return r.graph([&]() { return r.build_graph(z, decode); }, mb);
    }

    Measured tae_graph(bool decode, const std::vector<int64_t>& input, size_t alignment, size_t max_size,
                       bool conv_direct) {
        MeasureBufferType mb(alignment, max_size);
        TinyVae& r = tae();
        r.set_conv2d_direct_enabled(conv_direct);
        auto z = zeros(input);
        return r.graph([&]() { return r.build_graph(z, decode); }, mb);
    }

    Measured t5_graph(int64_t tokens, bool flash_attention, size_t alignment, size_t max_size) {
        return t5_measure(tokens, flash_attention, alignment, max_size,
                          [](TextT5& r, const std::function<ggml_cgraph*()>& build, const MeasureBufferType& mb) {
                              return r.graph(build, mb);
                          });
    }

    Planned t5_plan(int64_t tokens, bool flash_attention, size_t alignment, size_t max_size, size_t budget) {
        return t5_measure(tokens, flash_attention, alignment, max_size,
                          [budget](TextT5& r, const std::function<ggml_cgraph*()>& build, const MeasureBufferType& mb) {
                              return r.plan(build, budget, mb);
                          });
    }

    Measured clip_vision_graph(bool flash_attention, size_t alignment, size_t max_size) {
        return clip_vision_measure(
            flash_attention, alignment, max_size,
            [](ClipVision& r, const std::function<ggml_cgraph*()>& build, const MeasureBufferType& mb) {
                return r.graph(build, mb);
            });
    }

    Planned clip_vision_plan(bool flash_attention, size_t alignment, size_t max_size, size_t budget) {
        return clip_vision_measure(
            flash_attention, alignment, max_size,
            [budget](ClipVision& r, const std::function<ggml_cgraph*()>& build, const MeasureBufferType& mb) {
                return r.plan(build, budget, mb);
            });
    }

private:
    // The DiT's inputs, zeros of the given shapes (empty: none).
    struct DitInputs {
        sd::Tensor<float> x, timesteps, context, clip_fea, c_concat, vace_context;
        DitInputs(const std::vector<int64_t>& x_, const std::vector<int64_t>& context_,
                  const std::vector<int64_t>& clip_fea_, const std::vector<int64_t>& c_concat_,
                  const std::vector<int64_t>& vace_context_, int64_t timesteps_)
            : x(zeros(x_)),
              timesteps(zeros({timesteps_})),
              context(zeros(context_)),
              clip_fea(clip_fea_.empty() ? sd::Tensor<float>() : zeros(clip_fea_)),
              c_concat(c_concat_.empty() ? sd::Tensor<float>() : zeros(c_concat_)),
              vace_context(vace_context_.empty() ? sd::Tensor<float>() : zeros(vace_context_)) {}
        ggml_cgraph* build(DiT& r, size_t tensor_ceiling) const {
            return r.build_measure_graph(x, timesteps, context, clip_fea, c_concat, vace_context, tensor_ceiling);
        }
    };

    // The T5's graph for tokens, handed to fn(runner, build, mb).
    template <class Fn>
    auto t5_measure(int64_t tokens, bool flash_attention, size_t alignment, size_t max_size, Fn&& fn)
        -> std::invoke_result_t<Fn, TextT5&, const std::function<ggml_cgraph*()>&, const MeasureBufferType&> {
        MeasureBufferType mb(alignment, max_size);
        TextT5& r = t5();
        r.set_flash_attention_enabled(flash_attention);
        sd::Tensor<int32_t> ids({tokens}, std::vector<int32_t>(static_cast<size_t>(tokens), 0));
        auto mask = zeros({tokens});
        return fn(r, [&]() { return r.build_graph(ids, mask); }, mb);
    }

    // CLIP vision's graph of one image, handed to fn(runner, build, mb).
    template <class Fn>
    auto clip_vision_measure(bool flash_attention, size_t alignment, size_t max_size, Fn&& fn)
        -> std::invoke_result_t<Fn, ClipVision&, const std::function<ggml_cgraph*()>&, const MeasureBufferType&> {
        MeasureBufferType mb(alignment, max_size);
        ClipVision& r = clip_vision();
        r.set_flash_attention_enabled(flash_attention);
        int64_t side = r.vision_model.image_size;
        auto pixels  = zeros({side, side, 3, 1});
        return fn(r, [&]() { return r.build_graph(pixels, false, -2); }, mb);
    }

    DiT& dit(bool high_noise) {
        auto& slot             = high_noise ? high_noise_ : dit_;
        const char* prefix     = high_noise ? "model.high_noise_diffusion_model" : "model.diffusion_model";
        if (!slot) {
            if (!has(std::string(prefix) + ".")) throw NativeError(std::string("no ") + prefix + " tensors");
            slot = std::make_unique<DiT>(backend_, false, loader_.get_tensor_storage_map(), prefix, version_);
        }
        return *slot;
    }

    // decode_only: as new_sd_ctx builds it with vae_decode_only (no encoder tensors)
    WanVAE& vae(bool decode_only = false) {
        std::unique_ptr<WanVAE>& made = decode_only ? vae_decoder_ : vae_;
        if (!made) {
            if (!has("first_stage_model.")) throw NativeError("no VAE tensors");
            made = std::make_unique<WanVAE>(backend_, false, loader_.get_tensor_storage_map(), "first_stage_model",
                                            decode_only, version_);
        }
        return *made;
    }

    // as new_sd_ctx's create_tae builds it for Wan (its type lookups under "decoder"; video mode
    // has the encoder too)
    TinyVae& tae(bool decode_only = false) {
        std::unique_ptr<TinyVae>& made = decode_only ? tae_decoder_ : tae_;
        if (!made) {
            if (!has("tae.")) throw NativeError("no tiny VAE tensors");
            made = std::make_unique<TinyVae>(backend_, false, loader_.get_tensor_storage_map(), "decoder", decode_only,
                                             version_);
        }
        return *made;
    }

    TextT5& t5() {
        if (!t5_) {
            if (!has("text_encoders.t5xxl.transformer.")) throw NativeError("no text encoder tensors");
            t5_ = std::make_unique<TextT5>(backend_, false, loader_.get_tensor_storage_map(),
                                           "text_encoders.t5xxl.transformer", true);
        }
        return *t5_;
    }

    ClipVision& clip_vision() {
        if (!clip_vision_) {
            if (!has("cond_stage_model.transformer.")) throw NativeError("no clip vision tensors");
            clip_vision_ = std::make_unique<ClipVision>(backend_, false, loader_.get_tensor_storage_map());
        }
        return *clip_vision_;
    }

    ggml_backend_t backend_;
    Loader loader_;
    SDVersion version_ = VERSION_COUNT;
    std::unique_ptr<DiT> dit_, high_noise_;
    std::unique_ptr<WanVAE> vae_, vae_decoder_;
    std::unique_ptr<TextT5> t5_;
    std::unique_ptr<ClipVision> clip_vision_;
    std::unique_ptr<TinyVae> tae_, tae_decoder_;
};

void check_budget(size_t budget) {
    if (budget == 0) throw py::value_error("budget must be > 0 bytes");
}

}  // namespace

#define PLAN_DOC                                                                                                  \
    "The dict: segmented (whether sd.cpp runs it segment by segment; False: its ordinary path, all weights "     \
    "on the device and one compute buffer, measured after planning), segments (after the budget merge; 1 when "  \
    "not segmented), base_segments, smallest_budget (the largest need sd.cpp plans for one base segment: the "   \
    "smallest budget no segment exceeds), device_peak (the most a segment holds on the device at once: params, " \
    "compute, cache in and out; or weights + compute), largest_params, largest_compute, largest_cache (single "  \
    "buffers), largest_tensor (bytes), largest_tensor_name, largest_tensor_shape, largest_tensor_type, "         \
    "per_segment (dicts: name, params, compute, cache_in, cache_out, planned; empty when not segmented). Bytes."

void register_measure(py::module_& m) {
    using Files   = std::vector<std::tuple<std::string, std::string>>;               // (path, prefix)
    using Tensors = std::vector<std::tuple<std::string, int, std::vector<int64_t>>>;  // (name, ggml type, ne)
    using Shape   = std::vector<int64_t>;
    py::class_<Session>(m, "MeasureSession",
                        "Weightless sd.cpp runners over model headers (or preset tensors), for the pre-flight. "
                        "Every method runs without the GIL, one measurement at a time in the process; each "
                        "measurement is a dict: total, largest, name, op, shape, type.")
        .def(py::init([](const Files& files, const Tensors& tensors) {
                 return measuring([&] { return std::make_unique<Session>(files, tensors); });
             }),
             py::arg("files"), py::arg("tensors"), "Read the files' headers (path, loader prefix) with sd.cpp.")
        .def("has", [](Session& s, const std::string& prefix) { return measuring([&] { return s.has(prefix); }); },
             py::arg("prefix"), "Whether any tensor name starts with prefix.")
        .def("dit_desc",
             [](Session& s, bool high_noise) { return measuring([&] { return s.dit_desc(high_noise); }); },
             py::arg("high_noise"), "sd.cpp's description of the DiT it would build (its model name).")
        .def("weights",
             [](Session& s, const std::string& component, size_t alignment, size_t max_size) {
                 return as_record(measuring([&] { return s.weights(component, alignment, max_size); }));
             },
             py::arg("component"), py::arg("alignment"), py::arg("max_size"),
             "A component's weights buffer and largest tensor; \"vae decoder\" and \"tiny_vae decoder\": the VAE's "
             "as sd.cpp loads it with vae_decode_only (no encoder).")
        .def("dit_graph",
             [](Session& s, bool high_noise, const Shape& x, const Shape& context, const Shape& clip_fea,
                const Shape& c_concat, const Shape& vace_context, int64_t timesteps, bool flash_attention, size_t alignment, size_t max_size,
                size_t tensor_ceiling) {
                 return as_record(measuring([&] {
                     return s.dit_graph(high_noise, x, context, clip_fea, c_concat, vace_context, timesteps,
                                        flash_attention,
                                        alignment, max_size, tensor_ceiling);
                 }));
             },
             py::arg("high_noise"), py::arg("x"), py::arg("context"), py::arg("clip_fea"), py::arg("c_concat"),
             py::arg("vace_context"), py::arg("timesteps"), py::arg("flash_attention"), py::arg("alignment"), py::arg("max_size"),
             py::arg("tensor_ceiling") = 0,
             "vace_context: a VACE DiT's control context ([] for none). "
             "tensor_ceiling: the device's largest single tensor (0: none), as a real run registers it with "
             "set_tensor_ceiling; the DiT's feed-forward block is chunked above it (patch 0007).")
        .def("vae_graph",
             [](Session& s, bool decode, const Shape& input, bool flash_attention, size_t alignment,
                size_t max_size, bool conv_direct) {
                 return as_record(measuring(
                     [&] { return s.vae_graph(decode, input, flash_attention, alignment, max_size, conv_direct); }));
             },
             py::arg("decode"), py::arg("input"), py::arg("flash_attention"), py::arg("alignment"),
             py::arg("max_size"), py::arg("conv_direct") = false)
        .def("tae_graph",
             [](Session& s, bool decode, const Shape& input, size_t alignment, size_t max_size, bool conv_direct) {
                 return as_record(
                     measuring([&] { return s.tae_graph(decode, input, alignment, max_size, conv_direct); }));
             },
             py::arg("decode"), py::arg("input"), py::arg("alignment"), py::arg("max_size"),
             py::arg("conv_direct") = false, "The tiny video decoder's (TAEHV) graph: decoding latents or encoding "
                                              "pixels.")
        .def("t5_graph",
             [](Session& s, int64_t tokens, bool flash_attention, size_t alignment, size_t max_size) {
                 return as_record(
                     measuring([&] { return s.t5_graph(tokens, flash_attention, alignment, max_size); }));
             },
             py::arg("tokens"), py::arg("flash_attention"), py::arg("alignment"), py::arg("max_size"))
        .def("clip_vision_graph",
             [](Session& s, bool flash_attention, size_t alignment, size_t max_size) {
                 return as_record(
                     measuring([&] { return s.clip_vision_graph(flash_attention, alignment, max_size); }));
             },
             py::arg("flash_attention"), py::arg("alignment"), py::arg("max_size"))
        .def("dit_plan",
             [](Session& s, bool high_noise, const Shape& x, const Shape& context, const Shape& clip_fea,
                const Shape& c_concat, const Shape& vace_context, int64_t timesteps, bool flash_attention,
                size_t alignment, size_t max_size, size_t tensor_ceiling, size_t budget) {
                 check_budget(budget);
                 return as_record(measuring([&] {
                     return s.dit_plan(high_noise, x, context, clip_fea, c_concat, vace_context, timesteps,
                                       flash_attention, alignment, max_size, tensor_ceiling, budget);
                 }));
             },
             py::arg("high_noise"), py::arg("x"), py::arg("context"), py::arg("clip_fea"), py::arg("c_concat"),
             py::arg("vace_context"), py::arg("timesteps"), py::arg("flash_attention"), py::arg("alignment"),
             py::arg("max_size"), py::arg("tensor_ceiling"), py::arg("budget"),
             "sd.cpp's max_vram plan of dit_graph's graph for a budget in bytes (> 0). " PLAN_DOC)
        .def("t5_plan",
             [](Session& s, int64_t tokens, bool flash_attention, size_t alignment, size_t max_size, size_t budget) {
                 check_budget(budget);
                 return as_record(
                     measuring([&] { return s.t5_plan(tokens, flash_attention, alignment, max_size, budget); }));
             },
             py::arg("tokens"), py::arg("flash_attention"), py::arg("alignment"), py::arg("max_size"),
             py::arg("budget"), "sd.cpp's max_vram plan of t5_graph's graph for a budget in bytes (> 0). " PLAN_DOC)
        .def("clip_vision_plan",
             [](Session& s, bool flash_attention, size_t alignment, size_t max_size, size_t budget) {
                 check_budget(budget);
                 return as_record(
                     measuring([&] { return s.clip_vision_plan(flash_attention, alignment, max_size, budget); }));
             },
             py::arg("flash_attention"), py::arg("alignment"), py::arg("max_size"), py::arg("budget"),
             "sd.cpp's max_vram plan of clip_vision_graph's graph for a budget in bytes (> 0). " PLAN_DOC);
}

}  // namespace wanpy
