#include "backends/cuda/linear_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <memory>

#include "backends/cuda/bench_timing.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/fpx_gemm.h"
#include "backends/cuda/linear.h"
#include "backends/cuda/random.h"
#include "backends/cuda/weight_prepack.h"
#include "core/error.h"

namespace qf::cuda {

namespace {

// ---- formats the benchmark can make operands for ------------------------------------------
// Plain BF16, FP8 E4M3 with a per-tensor or per-token scale, and the FPx and w4a8 weight blobs
// (weight_prepack.h); any
// other quantized format needs its own operand generator (packed codes and scales) before its
// kernels can be benchmarked.
struct OperandKind {
  RandomType type;
  double bytes_per_element;
  bool fp8;
  // What fill_weights writes: `type` elements, or the FPx blob (packed tiles, then FP32 scales).
  enum class Fill : uint8_t { elements, fpx_blob, w4a8_blob } fill = Fill::elements;
  FpxType fpx{};  // fpx_blob: the element type
};

// Bytes of a [rows, cols] weight of `kind` as stored (the FPx blob adds its FP32 channel scales
// and pads to whole tiles, so it is not a whole number of bytes per element).
double weight_bytes_of(const OperandKind& kind, int64_t rows, int64_t cols) {
  if (kind.fill == OperandKind::Fill::fpx_blob) return double(fpx_packed_layout(kind.fpx, rows, cols).total_bytes());
  if (kind.fill == OperandKind::Fill::w4a8_blob) return double(w4a8_packed_layout(rows, cols).total_bytes());
  return static_cast<double>(rows) * cols * kind.bytes_per_element;
}

bool operand_kind(const Format& f, OperandKind* out) {
  if (f == bf16_format()) {
    *out = {RandomType::bf16, 2.0, false};
    return true;
  }
  if (f == fp8_tensor_format() || f == fp8_token_format()) {
    *out = {RandomType::fp8_e4m3, 1.0, true};
    return true;
  }
  if (is_w4a8_weight_format(f)) {  // w4a8's blob: 4-bit codes, FP8 group scales, F32 row scales
    *out = {RandomType::fp8_e4m3, 0.5, true, OperandKind::Fill::w4a8_blob};
    return true;
  }
  if (f.element.kind == ElementKind::fpx && f.granularity == Granularity::channel &&
      fpx_gemm_has_kernel(f.element.fpx_type())) {  // fpx_gemm's blob: 5 or 6 bits + an FP32 scale per row
    *out = {RandomType::bf16, f.element.bits() / 8.0, false, OperandKind::Fill::fpx_blob, f.element.fpx_type()};
    return true;
  }
  return false;
}

// Synthetic value distributions: weights like a trained layer's (std 0.02), activations of unit
// scale. FP8 operands are drawn in the FP8 range (std 1, well inside +-448) and carry the
// per-tensor scales below, so that x·W^T has the same magnitude as the BF16 case.
RandomSpec weight_spec(bool fp8) { return fp8 ? RandomSpec::normal_with(0.f, 1.f) : RandomSpec::normal_with(0.f, 0.02f); }
RandomSpec activation_spec() { return RandomSpec::normal_with(0.f, 1.f); }
constexpr float kFp8WeightScale = 0.02f;
constexpr float kFp8ActivationScale = 1.0f;

// `rows` x `cols` weights of `kind` at dst. The FPx blob: its code bytes are the bytes of E4M3
// values drawn over the whole E4M3 range, so every nibble and every high part occurs (not
// uniformly: the timing does not depend on the values); channel scales in [1, 4) x 1e-3: FPx
// values average a few units, so |W'| ~ 0.01, like the other formats' weights.
void fill_weights(void* dst, const OperandKind& kind, int64_t rows, int64_t cols, RandomSpec spec, uint64_t seed,
                  cudaStream_t stream) {
  if (kind.fill == OperandKind::Fill::elements) {
    fill_random(dst, kind.type, static_cast<size_t>(rows) * cols, spec, seed, stream);
    return;
  }
  if (kind.fill == OperandKind::Fill::w4a8_blob) {
    // Codes: random bytes (every nibble occurs); group scales E4M3 in [1, 32] (<= 56, the lut
    // bound the kernel relies on); row scales ~1e-3, so |W'| ~ 0.01 like the other formats.
    const W4a8PackedLayout l = w4a8_packed_layout(rows, cols);
    auto* b = static_cast<uint8_t*>(dst);
    fill_random(b, RandomType::fp8_e4m3, l.code_bytes(), RandomSpec::uniform_in(-448.f, 448.f), seed, stream);
    fill_random(b + l.scale_offset(), RandomType::fp8_e4m3, size_t(rows * l.scale_stride()),
                RandomSpec::uniform_in(1.f, 32.f), seed + 1, stream);
    fill_random(b + l.row_scale_offset(), RandomType::f32, size_t(rows), RandomSpec::uniform_in(5e-4f, 2e-3f),
                seed + 2, stream);
    return;
  }
  const FpxPackedLayout layout = fpx_packed_layout(kind.fpx, rows, cols);
  fill_random(dst, RandomType::fp8_e4m3, layout.code_bytes(), RandomSpec::uniform_in(-448.f, 448.f), seed, stream);
  fill_random(static_cast<uint8_t*>(dst) + layout.scale_offset(), RandomType::f32, layout.scale_count(),
              RandomSpec::uniform_in(1e-3f, 4e-3f), seed + 1, stream);
}

constexpr uint16_t kBf16NaN = 0x7FC1;  // a quiet NaN no arithmetic produces by accident

// Times `launch(set)` (which enqueues one operation on `stream`).
class Timer {
 public:
  Timer(const GemmBenchOptions& o, cudaStream_t stream) : opt_(o), stream_(stream) {
    // Enough events for max_reps launches, and for one launch per rotation set (at most 64).
    const int n = std::max(o.max_reps, 64);
    for (int i = 0; i < n; ++i) {
      start_.emplace_back();
      stop_.emplace_back();
    }
  }

  Timing time(const std::function<void(int)>& launch, int sets) {
    // Warm-up: every set once (first-use work: cuBLASLt plans, module loading) and a few more.
    for (int i = 0; i < std::max(sets, 3); ++i) launch(i % sets);
    QF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    // A short timed run sizes the real one.
    const int probe = std::min<int>(5, static_cast<int>(start_.size()));
    const Timing est = run(launch, sets, probe);
    int reps = static_cast<int>(opt_.target_ms * 1e3 / std::max(est.median_us, 1.0));
    reps = std::clamp(reps, std::max(opt_.min_reps, sets), std::max(opt_.max_reps, sets));
    reps = std::min<int>(reps, static_cast<int>(start_.size()));
    return run(launch, sets, reps);
  }

 private:
  Timing run(const std::function<void(int)>& launch, int sets, int reps) {
    // Keep the GPU busy while the host enqueues: ~20 µs of host time per launch and its two
    // events covers cuBLASLt's host overhead; capped so a long batch does not idle the GPU long.
    const uint64_t sleep_ns = std::min<uint64_t>(static_cast<uint64_t>(reps) * 20'000, 50'000'000);
    device_sleep(stream_, sleep_ns);
    for (int i = 0; i < reps; ++i) {
      start_[i].record(stream_);
      launch(i % sets);
      stop_[i].record(stream_);
    }
    stop_[reps - 1].synchronize();
    std::vector<double> us(reps);
    for (int i = 0; i < reps; ++i) us[i] = 1e3 * stop_[i].elapsed_ms_since(start_[i]);
    return timing_of(std::move(us));
  }

  const GemmBenchOptions& opt_;
  cudaStream_t stream_;
  std::vector<Event> start_, stop_;
};

// Options for large launches (the ceilings, the copy bandwidth): 20 timed runs are plenty.
GemmBenchOptions short_options(GemmBenchOptions o) {
  o.min_reps = 20;
  o.max_reps = 20;
  return o;
}

// Operand sets of one format for one layer shape: the weight copies (rotated so that together
// they exceed L2) and, per batch size, the activations.
struct OperandSets {
  OperandKind kind;
  std::vector<DeviceBuffer> weights;
  std::vector<DeviceBuffer> activations;
  int64_t activation_m = -1;
};

// Floats between the two FP8 scales in scales_: 16 bytes.
constexpr int kFp8ScaleStride = 4;

class GemmBench {
 public:
  explicit GemmBench(const GemmBenchOptions& o) : opt_(o), timer_(o, stream_.get()) {
    const DeviceInfo& info = device_info();
    rotate_bytes_ = 4.0 * static_cast<double>(info.l2_bytes);
    // Each scale 16-byte aligned (cuBLASLt refuses FP8 scale pointers that are not: CublasLt::linear_fp8).
    scales_ = DeviceBuffer(2 * kFp8ScaleStride * sizeof(float), "the FP8 scales");
    float scales[2 * kFp8ScaleStride] = {};
    scales[0] = kFp8ActivationScale;
    scales[kFp8ScaleStride] = kFp8WeightScale;
    copy_to_device(scales_.data(), scales, sizeof scales, stream_);
    // Per-token activation scales (fp8_e4m3:token) for the largest batch, around 1.
    int64_t max_m = 1;
    for (int64_t m : opt_.batches) max_m = std::max(max_m, m);
    token_scales_ = DeviceBuffer(static_cast<size_t>(max_m) * sizeof(float), "the per-token FP8 scales");
    fill_random(token_scales_.data(), RandomType::f32, static_cast<size_t>(max_m), RandomSpec::uniform_in(0.5f, 2.f),
                opt_.seed + 7, stream_);
  }

  GemmBenchReport run() {
    GemmBenchReport report;
    const DeviceInfo& info = device_info();
    report.date_utc = utc_now();
    report.device = info.name;
    report.sm_count = info.sm_count;
    report.l2_mb = static_cast<double>(info.l2_bytes) / 1e6;
    report.memory_gb = static_cast<double>(info.total_bytes) / 1e9;
    if (opt_.measure_ceilings) ceilings_ = measure_ceilings();
    report.ceilings = ceilings_;

    std::vector<LinearKernel*> reported;
    for (LinearKernel* k : registry_.kernels())
      if (opt_.kernels.empty() || std::find(opt_.kernels.begin(), opt_.kernels.end(), std::string(k->name())) != opt_.kernels.end())
        reported.push_back(k);
    for (const std::string& name : opt_.kernels)
      QF_CHECK(registry_.find(name), "bench gemm: unknown kernel '", name, "'; registered: ", kernel_names());

    for (const std::string& model : opt_.models)
      for (const GemmLayerShape& shape : llama_layer_shapes(model)) bench_shape(shape, reported, report.rows, report.errors);
    return report;
  }

 private:
  std::string kernel_names() const {
    std::string s;
    for (LinearKernel* k : registry_.kernels()) s += str(s.empty() ? "" : ", ", k->name());
    return s;
  }

  bool selected(const LinearKernel& k, const LinearShape& shape) const {
    try {
      return &registry_.select(k.key(), shape) == &k;
    } catch (const Error&) {
      return false;
    }
  }

  void say(const std::string& line) const {
    if (opt_.progress) opt_.progress(line);
  }

  // Rotation count for operands of `bytes` per set: enough that the sets together are >= 4x L2.
  int sets_for(double bytes, int at_most) const {
    const int n = static_cast<int>(std::ceil(rotate_bytes_ / std::max(bytes, 1.0)));
    return std::clamp(n, 2, std::max(at_most, 2));
  }

  OperandSets& operands(const Format& weight_format, const GemmLayerShape& s) {
    auto it = sets_.find(weight_format.str());
    if (it != sets_.end()) return it->second;
    OperandSets o;
    QF_ASSERT(operand_kind(weight_format, &o.kind));
    const double w_bytes = weight_bytes_of(o.kind, s.n, s.k);
    const int n = sets_for(w_bytes, 64);
    for (int i = 0; i < n; ++i) {
      o.weights.emplace_back(static_cast<size_t>(w_bytes), str(s.model, " ", s.layer, " weights (", weight_format.str(), ")"));
      fill_weights(o.weights.back().data(), o.kind, s.n, s.k, weight_spec(o.kind.fp8), opt_.seed * 1000 + 2 * i,
                   stream_);
    }
    return sets_.emplace(weight_format.str(), std::move(o)).first->second;
  }

  void ensure_activations(OperandSets& o, const GemmLayerShape& s, int64_t m, int sets) {
    if (o.activation_m == m && static_cast<int>(o.activations.size()) >= sets) return;
    o.activations.clear();
    for (int i = 0; i < sets; ++i) {
      o.activations.emplace_back(static_cast<size_t>(m * s.k * o.kind.bytes_per_element), "benchmark activations");
      fill_random(o.activations.back().data(), o.kind.type, static_cast<size_t>(m * s.k), activation_spec(),
                  opt_.seed * 1000 + 2 * i + 1, stream_);
    }
    o.activation_m = m;
  }

  void bench_shape(const GemmLayerShape& s, const std::vector<LinearKernel*>& reported, std::vector<GemmBenchRow>& rows,
                   std::vector<std::string>& errors) {
    sets_.clear();
    LinearKernel* bf16_base = registry_.find("cublaslt_bf16");
    LinearKernel* fp8_base = registry_.find("cublaslt_fp8");
    QF_ASSERT(bf16_base && fp8_base);
    std::vector<LinearKernel*> to_time = {bf16_base, fp8_base};
    for (LinearKernel* k : reported)
      if (std::find(to_time.begin(), to_time.end(), k) == to_time.end()) to_time.push_back(k);

    for (int64_t m : opt_.batches) {
      QF_CHECK(m >= 1, "bench gemm: batch size ", m, " is not positive");
      const LinearShape shape{m, s.n, s.k};
      say(str(s.model, " ", s.layer, " M=", m, " N=", s.n, " K=", s.k));
      std::map<const LinearKernel*, std::pair<Timing, int>> times;
      for (LinearKernel* k : to_time) {
        OperandKind wk{}, xk{};
        if (!operand_kind(k->key().weight, &wk) || !operand_kind(k->key().activation, &xk)) {
          say(str("  skipping ", k->name(), ": the benchmark cannot make operands for ", key_str(k->key())));
          continue;
        }
        if (!k->supports(shape)) continue;
        try {
          times[k] = time_kernel(*k, s, m);
        } catch (const Error& e) {
          // A CUDA error inside a kernel is sticky: the context is gone and nothing after works.
          // Anything else (no cuBLASLt algorithm, an unwritten output) loses only this case.
          errors.push_back(str(s.model, " ", s.layer, " M=", m, " ", k->name(), ": ", e.what()));
          say("  FAILED: " + errors.back());
          QF_CUDA_CHECK(cudaDeviceSynchronize());
        }
      }
      auto base_us = [&](const LinearKernel* k) { return times.count(k) ? times[k].first.median_us : 0.0; };
      for (LinearKernel* k : reported) {
        if (!times.count(k)) continue;
        const auto& [t, sets] = times[k];
        OperandKind wk{}, xk{};
        operand_kind(k->key().weight, &wk);
        operand_kind(k->key().activation, &xk);
        GemmBenchRow r;
        r.model = s.model;
        r.layer = s.layer;
        r.kernel = std::string(k->name());
        r.weight_format = k->key().weight.str();
        r.activation_format = k->key().activation.str();
        r.m = m;
        r.n = s.n;
        r.k = s.k;
        r.median_us = t.median_us;
        r.min_us = t.min_us;
        r.max_us = t.max_us;
        r.reps = t.reps;
        r.rotation_sets = sets;
        r.flops = 2.0 * m * s.n * s.k;
        r.weight_bytes = weight_bytes_of(wk, s.n, s.k);
        r.all_bytes = r.weight_bytes + static_cast<double>(m) * s.k * xk.bytes_per_element + 2.0 * m * s.n;
        r.byte_floor_us = r.all_bytes / (ceilings_.copy_gb_s * 1e3);
        r.flop_floor_us = r.flops / ((xk.fp8 ? ceilings_.fp8_tflops : ceilings_.bf16_tflops) * 1e6);
        r.selected = selected(*k, shape);
        r.cublas_bf16_us = base_us(bf16_base);
        r.cublas_fp8_us = base_us(fp8_base);
        rows.push_back(r);
      }
    }
    sets_.clear();
  }

  std::pair<Timing, int> time_kernel(LinearKernel& k, const GemmLayerShape& s, int64_t m) {
    OperandSets& w = operands(k.key().weight, s);
    // Activations in the weight format's container when the formats agree (all kernels here);
    // otherwise their own sets.
    OperandSets* xs = &w;
    if (k.key().activation != k.key().weight) {
      const std::string name = "x:" + k.key().activation.str();
      auto it = sets_.find(name);
      if (it == sets_.end()) {
        OperandSets o;
        QF_ASSERT(operand_kind(k.key().activation, &o.kind));
        it = sets_.emplace(name, std::move(o)).first;
      }
      xs = &it->second;
    }
    const double set_bytes = weight_bytes_of(w.kind, s.n, s.k) +
                             static_cast<double>(m) * s.k * xs->kind.bytes_per_element + 2.0 * m * s.n;
    const int sets = sets_for(set_bytes, static_cast<int>(w.weights.size()));
    ensure_activations(*xs, s, m, sets);
    if (static_cast<int>(outputs_.size()) < sets || output_elems_ != static_cast<size_t>(m * s.n)) {
      outputs_.clear();
      output_elems_ = static_cast<size_t>(m * s.n);
      for (int i = 0; i < sets; ++i) outputs_.emplace_back(output_elems_ * 2, "benchmark outputs");
    }
    for (int i = 0; i < sets; ++i) fill_u16(outputs_[i].data(), kBf16NaN, output_elems_, stream_);

    const float* x_scale = k.key().activation.granularity == Granularity::token ? token_scales_.as<float>()
                                                                                : scales_.as<float>();
    const float* w_scale = scales_.as<float>() + kFp8ScaleStride;
    auto launch = [&](int i) {
      LinearArgs a;
      a.shape = {m, s.n, s.k};
      a.x = xs->activations[i].data();
      a.w = w.weights[i].data();
      a.y = outputs_[i].data();
      a.x_scale = x_scale;
      a.w_scale = w_scale;
      a.stream = stream_;
      k.run(a);
    };
    Timing t = timer_.time(launch, sets);
    check_written(k, s, m, sets);
    return {t, sets};
  }

  // Every rotation set's output must have been overwritten (no NaN poison left, nothing
  // non-finite), or the timing measured a kernel that did not do its work. Checks the first and
  // last 64 K elements of each set.
  void check_written(const LinearKernel& k, const GemmLayerShape& s, int64_t m, int sets) {
    const size_t probe = std::min<size_t>(output_elems_, 65536);
    std::vector<uint16_t> host(probe);
    for (int i = 0; i < sets; ++i) {
      for (size_t offset : {size_t{0}, output_elems_ - probe}) {
        copy_to_host(host.data(), outputs_[i].as<uint16_t>() + offset, probe * 2, stream_);
        for (size_t j = 0; j < probe; ++j)
          QF_CHECK((host[j] & 0x7F80) != 0x7F80, "bench gemm: ", k.name(), " left a non-finite output (bits 0x",
                   std::hex, host[j], std::dec, ") at element ", offset + j, " of set ", i, " for ", s.model, " ",
                   s.layer, " M=", m);
      }
    }
  }

  GemmBenchCeilings measure_ceilings() {
    GemmBenchCeilings c;
    c.measured = true;
    c.copy_gb_s = measure_copy_gb_s(stream_.get(), opt_.seed);
    say(str("copy bandwidth ", c.copy_gb_s, " GB/s"));
    const int64_t n = 8192;
    const double flops = 2.0 * n * n * n;
    auto rate = [&](const char* name, RandomType type, float w_std) {
      LinearKernel* k = registry_.find(name);
      QF_ASSERT(k);
      const size_t elems = static_cast<size_t>(n * n);
      DeviceBuffer x(elems * random_type_size(type), "8192^3 x"), w(elems * random_type_size(type), "8192^3 W"),
          y(elems * 2, "8192^3 y");
      fill_random(x.data(), type, elems, activation_spec(), opt_.seed + 11, stream_);
      fill_random(w.data(), type, elems, RandomSpec::normal_with(0.f, w_std), opt_.seed + 12, stream_);
      auto launch = [&](int) {
        LinearArgs a;
        a.shape = {n, n, n};
        a.x = x.data();
        a.w = w.data();
        a.y = y.data();
        a.x_scale = scales_.as<float>();
        a.w_scale = scales_.as<float>() + kFp8ScaleStride;
        a.stream = stream_;
        k->run(a);
      };
      Timing t = short_timer().time(launch, 1);
      const double tflops = flops / (t.median_us * 1e6);
      say(str(name, " at 8192^3: ", tflops, " TFLOP/s (", t.median_us, " us)"));
      return tflops;
    };
    c.bf16_tflops = rate("cublaslt_bf16", RandomType::bf16, 0.02f);
    c.fp8_precise_tflops = rate("cublaslt_fp8", RandomType::fp8_e4m3, 1.f);
    c.fp8_fast_tflops = rate("cublaslt_fp8_fast", RandomType::fp8_e4m3, 1.f);
    c.fp8_tflops = std::max(c.fp8_precise_tflops, c.fp8_fast_tflops);
    return c;
  }

  // The ceilings are large, compute-heavy launches: 20 of them are plenty.
  Timer& short_timer() {
    if (!short_timer_) {
      short_opt_ = short_options(opt_);
      short_timer_ = std::make_unique<Timer>(short_opt_, stream_.get());
    }
    return *short_timer_;
  }

  const GemmBenchOptions& opt_;
  Stream stream_;
  LinearRegistry registry_;
  Timer timer_;
  GemmBenchOptions short_opt_;
  std::unique_ptr<Timer> short_timer_;
  GemmBenchCeilings ceilings_;
  double rotate_bytes_ = 0;
  DeviceBuffer scales_;
  DeviceBuffer token_scales_;
  std::map<std::string, OperandSets> sets_;
  std::vector<DeviceBuffer> outputs_;
  size_t output_elems_ = 0;
};

}  // namespace

std::vector<std::string> known_gemm_models() {
  std::vector<std::string> names;
  for (const LlamaDims& d : kLlamaModels) names.emplace_back(d.name);
  return names;
}

std::vector<GemmLayerShape> llama_layer_shapes(const std::string& model) {
  if (std::vector<GemmLayerShape> shapes = find_llama_layer_shapes(model); !shapes.empty()) return shapes;
  std::string known;
  for (const std::string& n : known_gemm_models()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown model '", model, "' (known: ", known, ")");
}

GemmBenchReport run_gemm_bench(const GemmBenchOptions& options) {
  QF_CHECK(!options.models.empty(), "bench gemm: no models given");
  QF_CHECK(!options.batches.empty(), "bench gemm: no batch sizes given");
  QF_CHECK(options.min_reps >= 1 && options.max_reps >= options.min_reps, "bench gemm: bad repetition bounds ",
           options.min_reps, "..", options.max_reps);
  for (const std::string& m : options.models) (void)llama_layer_shapes(m);  // fail early on a bad name
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  QF_CHECK(err == cudaSuccess && devices > 0, "bench gemm needs a CUDA GPU: ",
           err == cudaSuccess ? "none is present" : cudaGetErrorString(err));
  GemmBench bench(options);
  return bench.run();
}

double measure_copy_gb_s(cudaStream_t stream, uint64_t seed) {
  const size_t bytes = size_t{1} << 30;  // 2 GiB of traffic per copy
  DeviceBuffer a(bytes, "the copy-bandwidth source"), b(bytes, "the copy-bandwidth destination");
  fill_random(a.data(), RandomType::f32, bytes / 4, RandomSpec::uniform_in(-1.f, 1.f), seed, stream);
  const GemmBenchOptions o = short_options({});
  Timer timer(o, stream);
  const Timing t = timer.time(
      [&](int) { QF_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream)); }, 1);
  return 2.0 * double(bytes) / (t.median_us * 1e3);
}

}  // namespace qf::cuda
