#include "runtime/cuda_engine.h"

#include "backends/cuda/weight_prepack.h"
#include "core/error.h"

namespace qf {

std::string cuda_linears_name(const CudaLinearMode& m) {
  switch (m.kind) {
    case CudaLinears::w4a8: return "w4a8";
    case CudaLinears::fpx: return ElementType::fpx(m.fpx).str();
    default: return "bf16";
  }
}

std::string cuda_attention_name(const CudaAttentionMode& m) {
  const bool fp8 = m.kv != cuda::KvElement::bf16 && m.q_fp8;
  return str("kv ", cuda::kv_element_name(m.kv), m.q_fp8 ? ", q fp8_e4m3:token" : "",
             fp8 ? (m.fp8_prefill ? ", prefill attention fp8" : ", prefill attention bf16") : "");
}

std::optional<CudaAttentionMode> cuda_attention_for(const std::optional<Format>& kv_cache,
                                                    const std::optional<Format>& query) {
  CudaAttentionMode m;
  if (kv_cache) {
    const std::optional<cuda::KvElement> e = cuda::kv_element_for(*kv_cache);
    if (!e) return std::nullopt;
    m.kv = *e;
  }
  if (query) {
    if (*query != Format::parse("fp8_e4m3:token")) return std::nullopt;
    m.q_fp8 = true;
  }
  return m;
}

std::optional<CudaLinearMode> cuda_linears_for(const QuantizationConfig& q) {
  bool any_rounding = false, all_w4a8 = !q.linears.empty(), all_fpx = !q.linears.empty();
  const Format token = Format::parse("fp8_e4m3:token");
  std::optional<ElementType> fpx;
  for (const auto& [name, l] : q.linears) {
    any_rounding = any_rounding || l.activations.has_value();
    const Format& w = l.weights;
    all_w4a8 = all_w4a8 && cuda::is_w4a8_weight_format(w) && l.activations && *l.activations == token;
    // The FPx kernels' blob holds one F32 effective scale per row: any channel scale, any type.
    const bool is_fpx = w.element.kind == ElementKind::fpx && w.granularity == Granularity::channel &&
                        (w.element.bits() == 5 || w.element.bits() == 6) && (!fpx || *fpx == w.element);
    if (is_fpx) fpx = w.element;
    all_fpx = all_fpx && is_fpx;
  }
  if (all_w4a8) return CudaLinearMode{CudaLinears::w4a8, {}};
  if (any_rounding) return std::nullopt;
  if (all_fpx) return CudaLinearMode{CudaLinears::fpx, fpx->fpx_type()};
  return CudaLinearMode{};
}

}  // namespace qf

#ifdef QF_HAVE_CUDA

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/attention_fp8.h"
#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/fpx_gemm.h"
#include "backends/cuda/gather.h"
#include "backends/cuda/gemv.h"
#include "backends/cuda/kv_cache.h"
#include "backends/cuda/linear.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/random.h"
#include "backends/cuda/rope_kv.h"
#include "backends/cuda/w4a8_gemm.h"
#include "backends/cuda/weight_prepack.h"
#include "formats/convert.h"
#include "runtime/rope_frequencies.h"

namespace qf {

using bf16 = __nv_bfloat16;

namespace {

struct SyntheticSpec {
  const char* name;
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, max_pos;
  double theta;
  bool tied;
};
// Hyper-parameters of the published checkpoints (config.json of each).
constexpr SyntheticSpec kSynthetic[] = {
    {"llama2-7b", 32000, 4096, 11008, 32, 32, 32, 128, 4096, 10000.0, false},
    {"llama3-8b", 128256, 4096, 14336, 32, 32, 8, 128, 8192, 500000.0, false},
    {"llama2-70b", 32000, 8192, 28672, 80, 64, 8, 128, 4096, 10000.0, false},
    {"smollm2-135m", 49152, 576, 1536, 30, 9, 3, 64, 8192, 100000.0, true},
};

// A sub-range of the arena reserved per allocation for alignment (DeviceArena::kDefaultAlign).
constexpr size_t kAlignSlack = cuda::DeviceArena::kDefaultAlign;

}  // namespace

std::vector<std::string> synthetic_model_names() {
  std::vector<std::string> v;
  for (const auto& s : kSynthetic) v.push_back(s.name);
  return v;
}

ModelConfig synthetic_model_config(const std::string& name) {
  for (const auto& s : kSynthetic) {
    if (name != s.name) continue;
    ModelConfig c;
    c.architecture = "llama";
    c.name = "synthetic " + name;
    c.vocab_size = s.vocab;
    c.hidden_size = s.hidden;
    c.intermediate_size = s.intermediate;
    c.num_layers = s.layers;
    c.num_heads = s.heads;
    c.num_kv_heads = s.kv_heads;
    c.head_dim = s.head_dim;
    c.max_position_embeddings = s.max_pos;
    c.rope_theta = s.theta;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = s.tied;
    c.validate("synthetic model " + name);
    return c;
  }
  std::string known;
  for (const auto& s : kSynthetic) known += str(known.empty() ? "" : ", ", s.name);
  fail("unknown synthetic model \"", name, "\" (known: ", known, ")");
}

struct CudaEngine::Impl {
  ModelConfig c;
  CudaEngineOptions o;
  std::string device_name;
  int64_t H = 0, F = 0, V = 0, q_dim = 0, kv_dim = 0, qkv_dim = 0;
  int64_t tmax = 0;       // tokens per pass
  int64_t head_rows = 0;  // LM-head rows per pass
  int max_blocks = 0;     // KV blocks per slot
  int sm_count = 0;
  cuda::AttentionShape att;

  cuda::Stream stream;
  cuda::DeviceArena arena;
  cuda::LinearRegistry linears;
  cuda::CublasLt head_lt;
  const cuda::LinearKey key{cuda::bf16_format(), cuda::bf16_format(), cuda::Backend::cuda};
  const cuda::LinearKey key_w4a8{cuda::w4a8_weight_format(), cuda::fp8_token_format(), cuda::Backend::cuda};
  cuda::LinearKey key_fpx;  // fpx: {the FPx channel format, bf16}
  bool w4a8 = false;        // o.linears.kind == w4a8
  bool fpx = false;         // o.linears.kind == fpx
  bool packed() const { return w4a8 || fpx; }  // the block linears are pre-packed blobs

  // The four GEMMs of a block: fused q/k/v, o, fused gate/up, down.
  enum Gemm { kQkv, kO, kGateUp, kDown };
  int64_t gemm_n[4] = {}, gemm_k[4] = {};
  struct Layer {
    bf16 *qkv = nullptr, *o = nullptr, *gu = nullptr, *down = nullptr;  // bf16 linears
    uint8_t* blob[4] = {};                                                // w4a8 / fpx linears (weight_prepack.h)
    float *attn_norm = nullptr, *mlp_norm = nullptr;
    const void* weight(Gemm g, bool w4) const {
      if (w4) return blob[g];
      const bf16* w[4] = {qkv, o, gu, down};
      return w[g];
    }
  };
  std::vector<Layer> layers;
  bf16* embed = nullptr;
  bf16* head = nullptr;
  float* final_norm = nullptr;
  double* inv_freq = nullptr;
  double attention_factor = 1.0;
  std::vector<cuda::KvLayerView> kv;
  std::unique_ptr<cuda::KvBlockManager> blocks;
  cuda::KvElement kv_elem = cuda::KvElement::bf16;
  bool kv_quantized() const { return kv_elem != cuda::KvElement::bf16; }
  // Quantized caches: one layer's worth of BF16 blocks (same ids as the pools) that a prefill
  // pass dequantizes its sequences' blocks into before the BF16 prefill kernel reads them.
  cuda::KvLayerView kv_staging;
  int stage_blocks = 0;  // blocks the current prefill pass stages (their ids at off.stage)
  // FireQ's attention (a quantized cache and FP8 queries): prefill runs the FP8 tensor-core kernel
  // (attention_fp8.h) instead, on the pass's queries quantized per (token, head) and its slots'
  // cached K/V staged as E4M3 codes (kv_cache_stage_fp8), one region per distinct slot.
  bool fp8_prefill = false;
  cuda::Fp8StagedKv kv8;
  uint8_t* q8 = nullptr;
  float* q8_scale = nullptr;
  int stage_seqs = 0;   // distinct slots the pass stages
  int max_kv_len = 0;   // the longest of them
  // FireQ's post-RoPE key scales per layer ([kv_dim] F32), or null (rope_kv.h).
  std::vector<float*> post_rope_scale;

  // Scratch of one pass.
  float* residual = nullptr;
  bf16 *hidden = nullptr, *normed = nullptr, *qkv = nullptr, *attn = nullptr, *gu = nullptr, *act = nullptr,
       *head_in = nullptr;
  float* logits = nullptr;
  void* decode_ws = nullptr;
  __nv_fp8_e4m3* xq = nullptr;  // w4a8: a linear's input in FP8 ...
  float* xs = nullptr;          // ... and its per-token scales

  // Per-pass metadata: one int32 buffer on the device at fixed offsets (a captured graph reads
  // the same addresses on every replay), filled from one of two pinned host buffers (the next
  // pass fills the other while the copy of this one may still be pending).
  struct Meta {
    // f8_*: the FP8 prefill's per-run key regions (start, length); st_*: per staged slot, the run
    // whose table row it uses, its region start and length.
    size_t tok, pos, kvslot, rows, q_start, kv_past, seq_len, f8_start, f8_len, st_run, st_start, st_len, btab, stage,
        total;
  } off{};
  int32_t* meta_dev = nullptr;
  int32_t* meta_host[2] = {nullptr, nullptr};
  cudaEvent_t meta_copied[2] = {nullptr, nullptr};
  int meta_turn = 0;

  size_t weight_bytes = 0, decode_read_bytes = 0;

  // Pinned host buffers the logits are copied into (a pinned copy runs at PCIe speed; a pageable
  // one is staged by the driver at a fraction of it: 16 MB of logits at batch 128 would cost
  // milliseconds). The returned Tensor borrows one and keeps it alive; a buffer is reused once
  // no Tensor holds it any more.
  struct Pinned {
    void* p = nullptr;
    size_t bytes = 0;
    ~Pinned() {
      if (p) cudaFreeHost(p);
    }
  };
  std::vector<std::shared_ptr<Pinned>> pinned;

  // Profiling (bench model --breakdown): an event after every op, the time between two events
  // charged to the op that ended at the second. Off by default; forces the eager path.
  bool profile = false;
  std::vector<cudaEvent_t> prof_pool;
  std::vector<std::pair<const char*, size_t>> prof_marks;  // op name, event index
  void mark(const char* name) {
    if (!profile) return;
    const size_t i = prof_marks.size();
    if (i == prof_pool.size()) {
      cudaEvent_t e;
      QF_CUDA_CHECK(cudaEventCreate(&e));
      prof_pool.push_back(e);
    }
    QF_CUDA_CHECK(cudaEventRecord(prof_pool[i], stream));
    prof_marks.push_back({name, i});
  }
  static constexpr size_t kMaxPinnedLogitsBytes = size_t(256) << 20;  // larger: pageable
  Tensor logits_tensor(int64_t rows);

  // Decode graphs by batch size. A size is captured the second time it is seen (the first,
  // eager, run makes every cuBLASLt plan and kernel attribute the capture must not create).
  std::map<int, cudaGraphExec_t> graphs;
  std::map<int, int> decode_seen;
  int captured = 0, replays = 0;

  Impl(const ModelConfig& config, const CudaEngineOptions& options);
  ~Impl();
  void allocate();
  void upload_checkpoint(const Checkpoint& ck, const std::map<std::string, QuantizedMatrix>* quantized);
  void fill_synthetic(uint64_t seed);

  // y[m, n] = x[m, k] · W^T for GEMM g of layer L, in the engine's linear mode. w4a8 takes its
  // input from xq / xs (FP8 codes and per-token scales), which the kernel before it wrote
  // (add_rmsnorm_fp8, silu_mul_fp8) or, given x, quantize_fp8_per_token writes first.
  void linear(const bf16* x, const Layer& L, Gemm g, bf16* y, int64_t m) {
    const int64_t n = gemm_n[g], k = gemm_k[g];
    cuda::LinearArgs a;
    a.shape = {m, n, k};
    a.w = L.weight(g, packed());
    a.y = y;
    a.stream = stream;
    if (w4a8) {
      if (x) cuda::quantize_fp8_per_token(x, xq, xs, m, k, stream);
      a.x = xq;
      a.x_scale = xs;
      linears.run(key_w4a8, a);
    } else {
      a.x = x;
      linears.run(fpx ? key_fpx : key, a);
    }
  }
  // BF16 linears at the batch sizes where the registry runs the gate/up projection with
  // gemv_bf16_v2: its SwiGLU variant writes silu(gate) * up directly (gemv.h; the same bits).
  bool fused_swiglu(int64_t m) const {
    return !w4a8 && !fpx && F % 16 == 0 && linears.select(key, {m, 2 * F, H}).name() == "gemv_bf16_v2";
  }
  // residual += delta; then the normalised rows become the next linear's input: BF16 `normed`,
  // or, for w4a8, xq / xs straight from FP32.
  void add_norm(const bf16* delta, int64_t T, const float* weight) {
    if (w4a8) cuda::add_rmsnorm_fp8(residual, delta, T, H, weight, float(c.rms_norm_eps), xq, xs, stream);
    else cuda::add_rmsnorm(residual, delta, T, H, weight, float(c.rms_norm_eps), normed, stream);
  }
  const int32_t* meta(size_t offset) const { return meta_dev + offset; }
  int32_t* host_meta() { return meta_host[meta_turn]; }
  // Copies the first `ints` of the host metadata, and the first stage_ints of its staging list.
  void upload_meta(size_t ints, size_t stage_ints = 0);
  void enqueue_body(int64_t T, int64_t R, int max_q_len, bool decode);
  void enqueue_head(const bf16* rows, int64_t n);
  void forward_decode(const Batch& b, const std::vector<int32_t>& table, float* out);
  void forward_chunks(const Batch& b, const std::vector<int32_t>& table, float* out);
};

CudaEngine::Impl::Impl(const ModelConfig& config, const CudaEngineOptions& options) : c(config), o(options) {
  c.validate(c.name.empty() ? "model" : c.name);
  QF_CHECK(o.num_slots >= 1, "the CUDA engine needs at least one slot, got ", o.num_slots);
  QF_CHECK(o.slot_capacity >= 1 && o.slot_capacity <= (int64_t(1) << 30), "slot capacity ", o.slot_capacity,
           " outside [1, 2^30]");
  QF_CHECK(o.max_chunk_tokens >= 1, "max_chunk_tokens must be positive, got ", o.max_chunk_tokens);
  QF_CHECK(!c.attention_bias, "the CUDA engine does not support q/k/v biases (", c.architecture,
           ") yet; use --device cpu");
  QF_CHECK(c.rope_scaling.type != RopeScalingType::Dynamic,
           "the CUDA engine does not support dynamic NTK RoPE scaling yet; use --device cpu");
  QF_CHECK(c.head_dim == 64 || c.head_dim == 128, "the CUDA attention kernels support head dims 64 and 128, the model has ",
           c.head_dim, "; use --device cpu");
  QF_CHECK(c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0,
           "the CUDA kernels need hidden and intermediate sizes that are multiples of 8 (", c.hidden_size, ", ",
           c.intermediate_size, ")");
  H = c.hidden_size;
  F = c.intermediate_size;
  V = c.vocab_size;
  q_dim = c.num_heads * c.head_dim;
  kv_dim = c.num_kv_heads * c.head_dim;
  qkv_dim = q_dim + 2 * kv_dim;
  tmax = std::max<int64_t>(o.max_chunk_tokens, o.num_slots);
  head_rows = std::max<int64_t>(std::min<int64_t>(tmax, 512), o.num_slots);
  max_blocks = int((o.slot_capacity + cuda::kKvBlockTokens - 1) / cuda::kKvBlockTokens);
  att = {int(c.num_heads), int(c.num_kv_heads), int(c.head_dim), float(1.0 / std::sqrt(double(c.head_dim)))};
  w4a8 = o.linears.kind == CudaLinears::w4a8;
  fpx = o.linears.kind == CudaLinears::fpx;
  kv_elem = o.attention.kv;
  fp8_prefill = kv_elem != cuda::KvElement::bf16 && o.attention.q_fp8 && o.attention.fp8_prefill;
  if (fpx) {
    QF_CHECK(cuda::fpx_gemm_has_kernel(o.linears.fpx), "no FPx kernel for ", cuda_linears_name(o.linears));
    key_fpx = {Format::parse(cuda_linears_name(o.linears) + ":channel"), cuda::bf16_format(), cuda::Backend::cuda};
  }
  const int64_t n[4] = {qkv_dim, H, 2 * F, H}, k[4] = {H, q_dim, H, F};
  for (int g = 0; g < 4; ++g) {
    gemm_n[g] = n[g];
    gemm_k[g] = k[g];
    QF_CHECK(!w4a8 || cuda::w4a8_supports(1, n[g], k[g]), "the w4a8 kernels need every linear's input width to be ",
             "a multiple of 32; this model has ", k[g]);
    QF_CHECK(!fpx || cuda::fpx_gemm_supports(o.linears.fpx, 1, n[g], k[g]), "the FPx kernels need every linear's ",
             "input width to be a multiple of 8; this model has ", k[g]);
  }
  const cuda::DeviceInfo& info = cuda::device_info();
  device_name = info.name;
  sm_count = info.sm_count;
  allocate();
}

CudaEngine::Impl::~Impl() {
  for (auto& [n, g] : graphs) cudaGraphExecDestroy(g);
  for (cudaEvent_t e : prof_pool) cudaEventDestroy(e);
  for (int i = 0; i < 2; ++i) {
    if (meta_copied[i]) cudaEventDestroy(meta_copied[i]);
    if (meta_host[i]) cudaFreeHost(meta_host[i]);
  }
}

void CudaEngine::Impl::allocate() {
  // Everything is sized here, before any allocation, so that "does it fit" is asked once.
  size_t allocations = 0;
  auto bytes = [&](size_t n) {
    ++allocations;
    return n;
  };
  size_t w = 0;
  w += bytes(size_t(V * H) * 2);                          // embedding
  if (!c.tie_word_embeddings) w += bytes(size_t(V * H) * 2);  // LM head
  w += bytes(size_t(H) * 4);                              // final norm
  auto gemm_bytes = [&](int g) {
    if (w4a8) return cuda::w4a8_packed_layout(gemm_n[g], gemm_k[g]).total_bytes();
    if (fpx) return cuda::fpx_packed_layout(o.linears.fpx, gemm_n[g], gemm_k[g]).total_bytes();
    return size_t(gemm_n[g] * gemm_k[g]) * 2;
  };
  const size_t per_layer = gemm_bytes(kQkv) + gemm_bytes(kO) + gemm_bytes(kGateUp) + gemm_bytes(kDown);
  w += size_t(c.num_layers) * (per_layer + 2 * size_t(H) * 4);
  allocations += size_t(c.num_layers) * 6;
  weight_bytes = w;
  decode_read_bytes = w - size_t(V * H) * 2 * (c.tie_word_embeddings ? 0 : 1);  // the gather reads a few rows
  if (c.tie_word_embeddings) decode_read_bytes = w;  // the tied table is read whole by the LM head

  const int64_t num_blocks = int64_t(o.num_slots) * max_blocks;
  const size_t kv_pool = size_t(cuda::kv_pool_bytes(kv_elem, num_blocks, int(c.num_kv_heads), int(c.head_dim)));
  // Prefill staging: BF16 blocks for the BF16 kernel, or E4M3 regions (K, V^T, F32 scales) of
  // every slot's capacity rounded to 128 rows for the FP8 kernel.
  const int64_t kv8_rows = int64_t(o.num_slots) * ((o.slot_capacity + 127) / 128 * 128);
  const size_t kv_staging_bytes =
      fp8_prefill ? size_t(kv8_rows * c.num_kv_heads) * (size_t(c.head_dim) + 4) : kv_quantized()
          ? size_t(cuda::kv_pool_bytes(cuda::KvElement::bf16, num_blocks, int(c.num_kv_heads), int(c.head_dim)))
          : 0;
  const size_t kv_bytes = 2 * size_t(c.num_layers) * kv_pool + 2 * kv_staging_bytes;
  allocations += (kv_quantized() ? 4 : 2) * size_t(c.num_layers) + 2;

  // The decode workspace of the largest split count any batch size can ask for.
  size_t ws = 0;
  for (int b = 1; b <= o.num_slots; ++b) {
    const int splits = cuda::decode_attention_num_splits(b, att, int(o.slot_capacity), sm_count, kv_elem);
    ws = std::max(ws, cuda::decode_attention_workspace_bytes(b, att, splits));
  }
  off.tok = 0;
  off.pos = off.tok + size_t(tmax);
  off.kvslot = off.pos + size_t(tmax);
  off.rows = off.kvslot + size_t(tmax);
  off.q_start = off.rows + size_t(tmax);
  off.kv_past = off.q_start + size_t(tmax) + 1;
  off.seq_len = off.kv_past + size_t(tmax);
  const size_t f8 = fp8_prefill ? size_t(tmax) : 0;
  off.f8_start = off.seq_len + size_t(tmax);
  off.f8_len = off.f8_start + f8;
  off.st_run = off.f8_len + f8;
  off.st_start = off.st_run + f8;
  off.st_len = off.st_start + f8;
  off.btab = off.st_len + f8;
  off.stage = off.btab + size_t(tmax) * size_t(max_blocks);
  off.total = off.stage + (kv_quantized() ? size_t(num_blocks) : 0);
  const size_t T = size_t(tmax);
  size_t scratch = bytes(T * H * 4) + bytes(T * H * 2) * 2 + bytes(T * qkv_dim * 2) + bytes(T * q_dim * 2) +
                   bytes(T * 2 * F * 2) + bytes(T * F * 2) + bytes(T * H * 2) +
                   bytes(size_t(head_rows) * V * 4) + bytes(ws) + bytes(off.total * 4) +
                   bytes(size_t(c.head_dim / 2) * 8) + (w4a8 ? bytes(T * size_t(std::max({H, q_dim, F}))) + bytes(T * 4) : 0) +
                   bytes(size_t(c.num_layers * kv_dim) * 4) +
                   (fp8_prefill ? bytes(T * size_t(q_dim)) + bytes(T * size_t(c.num_heads) * 4) : 0);
  const size_t arena_bytes = w + kv_bytes + scratch + (allocations + 8) * kAlignSlack;
  // Outside the arena: two cuBLASLt workspaces (the registry's and the LM head's).
  const size_t total = arena_bytes + 2 * cuda::CublasLt::kWorkspaceBytes;
  const cuda::MemoryInfo mem = cuda::device_memory();
  QF_CHECK(total <= mem.free_bytes, "the CUDA engine for ", c.name.empty() ? std::string("this model") : c.name,
           " does not fit on ", device_name, ": it needs ", cuda::size_str(total), " (", cuda_linears_name(o.linears), " weights ",
           cuda::size_str(w), ", KV cache ", cuda::size_str(kv_bytes), " for ", o.num_slots, " slots x ",
           o.slot_capacity, " tokens, scratch ", cuda::size_str(scratch + 2 * cuda::CublasLt::kWorkspaceBytes),
           " for passes of ", tmax, " tokens) but only ", cuda::size_str(mem.free_bytes), " of ",
           cuda::size_str(mem.total_bytes), " are free",
           w > mem.free_bytes ? " (the weights alone do not fit: a larger GPU or a quantized model is needed)"
                              : "; use fewer slots or a shorter slot capacity");

  arena = cuda::DeviceArena(arena_bytes, "CUDA engine");
  embed = arena.alloc_n<bf16>(size_t(V * H), "the token embedding");
  head = c.tie_word_embeddings ? embed : arena.alloc_n<bf16>(size_t(V * H), "the LM head");
  final_norm = arena.alloc_n<float>(size_t(H), "the final norm");
  layers.resize(size_t(c.num_layers));
  for (Layer& L : layers) {
    if (packed()) {
      const char* what[4] = {"q/k/v weights", "o_proj weights", "gate/up weights", "down_proj weights"};
      for (int g = 0; g < 4; ++g) L.blob[g] = arena.alloc_n<uint8_t>(gemm_bytes(g), what[g]);
    } else {
      L.qkv = arena.alloc_n<bf16>(size_t(qkv_dim * H), "q/k/v weights");
      L.o = arena.alloc_n<bf16>(size_t(H * q_dim), "o_proj weights");
      L.gu = arena.alloc_n<bf16>(size_t(2 * F * H), "gate/up weights");
      L.down = arena.alloc_n<bf16>(size_t(H * F), "down_proj weights");
    }
    L.attn_norm = arena.alloc_n<float>(size_t(H), "input_layernorm");
    L.mlp_norm = arena.alloc_n<float>(size_t(H), "post_attention_layernorm");
  }
  const int64_t pool_rows = cuda::kv_pool_rows(num_blocks, int(c.num_kv_heads));
  auto kv_layer = [&](cuda::KvElement e, const char* what) {
    cuda::KvLayerView view;
    const size_t elem_bytes = size_t(pool_rows * cuda::kv_row_bytes(e, int(c.head_dim)));
    view.k = arena.alloc(elem_bytes, str("the K cache", what));
    view.v = arena.alloc(elem_bytes, str("the V cache", what));
    if (e != cuda::KvElement::bf16) {
      view.k_scale = arena.alloc_n<__half>(size_t(pool_rows), "the K cache scales");
      view.v_scale = arena.alloc_n<__half>(size_t(pool_rows), "the V cache scales");
    }
    view.num_blocks = num_blocks;
    view.num_kv_heads = int(c.num_kv_heads);
    view.head_dim = int(c.head_dim);
    view.element = e;
    return view;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) kv.push_back(kv_layer(kv_elem, ""));
  if (fp8_prefill) {
    const size_t rows = size_t(kv8_rows * c.num_kv_heads);
    kv8.kv_rows = kv8_rows;
    kv8.k8 = arena.alloc_n<uint8_t>(rows * size_t(c.head_dim), "the FP8 prefill's staged K");
    kv8.vt8 = arena.alloc_n<uint8_t>(rows * size_t(c.head_dim), "the FP8 prefill's staged V");
    kv8.k_scale = arena.alloc_n<float>(rows, "the FP8 prefill's K scales");
    kv8.v_scale = arena.alloc_n<float>(rows, "the FP8 prefill's V scales");
    q8 = arena.alloc_n<uint8_t>(T * size_t(q_dim), "the FP8 prefill's queries");
    q8_scale = arena.alloc_n<float>(T * size_t(c.num_heads), "the FP8 prefill's query scales");
  } else if (kv_quantized()) {
    kv_staging = kv_layer(cuda::KvElement::bf16, " (BF16 staging for prefill)");
  }
  post_rope_scale.assign(size_t(c.num_layers), nullptr);
  blocks = std::make_unique<cuda::KvBlockManager>(num_blocks, o.num_slots, int(o.slot_capacity));

  residual = arena.alloc_n<float>(T * H, "the residual stream");
  hidden = arena.alloc_n<bf16>(T * H, "the block outputs");
  normed = arena.alloc_n<bf16>(T * H, "the normalised activations");
  qkv = arena.alloc_n<bf16>(T * qkv_dim, "q/k/v activations");
  attn = arena.alloc_n<bf16>(T * q_dim, "attention outputs");
  gu = arena.alloc_n<bf16>(T * 2 * F, "gate/up activations");
  act = arena.alloc_n<bf16>(T * F, "SwiGLU outputs");
  head_in = arena.alloc_n<bf16>(T * H, "LM head inputs");  // every row of a pass may want logits
  logits = arena.alloc_n<float>(size_t(head_rows) * V, "logits");
  decode_ws = arena.alloc(std::max<size_t>(ws, 16), "the decode attention workspace");
  meta_dev = arena.alloc_n<int32_t>(off.total, "batch metadata");
  inv_freq = arena.alloc_n<double>(size_t(c.head_dim / 2), "RoPE frequencies");
  if (w4a8) {
    xq = arena.alloc_n<__nv_fp8_e4m3>(T * size_t(std::max({H, q_dim, F})), "FP8 linear inputs");
    xs = arena.alloc_n<float>(T, "per-token FP8 scales");
  }

  for (int i = 0; i < 2; ++i) {
    QF_CUDA_CHECK(cudaMallocHost(&meta_host[i], off.total * 4));
    QF_CUDA_CHECK(cudaEventCreateWithFlags(&meta_copied[i], cudaEventDisableTiming));
  }
  const RopeFrequencies rope = rope_frequencies(c, c.max_position_embeddings);
  attention_factor = rope.attention_factor;
  cuda::copy_to_device(inv_freq, rope.inv_freq.data(), rope.inv_freq.size() * 8, stream);
  linears.kernels();  // nothing to create yet; the first run makes the cuBLASLt handle
}

void CudaEngine::Impl::upload_checkpoint(const Checkpoint& ck, const std::map<std::string, QuantizedMatrix>* quantized) {
  QF_CHECK(!packed() || quantized, "internal: the ", cuda_linears_name(o.linears),
           " CUDA engine needs the quantized matrices");
  auto upload = [&](void* dst, const std::string& name, int64_t rows, int64_t cols, DType dtype) {
    const Tensor& t = ck.tensor(name);
    QF_CHECK(t.numel() == rows * cols, ck.path, ": ", name, " has shape ", shape_str(t.shape()), ", expected [",
             rows, ", ", cols, "]");
    const Tensor conv = t.dtype() == dtype ? t : convert(t, dtype);
    cuda::copy_to_device(dst, conv.raw(), conv.nbytes(), stream);
  };
  upload(embed, names::embed(), V, H, DType::BF16);
  if (!c.tie_word_embeddings) upload(head, names::lm_head(), V, H, DType::BF16);
  upload(final_norm, names::final_norm(), 1, H, DType::F32);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto N = [&](const std::string& leaf) { return names::layer(i, leaf); };
    Layer& L = layers[size_t(i)];
    if (ck.has(k_post_rope_scale_name(i))) {
      float*& p = post_rope_scale[size_t(i)];
      p = arena.alloc_n<float>(size_t(kv_dim), "post-RoPE key scales");
      upload(p, k_post_rope_scale_name(i), 1, kv_dim, DType::F32);
    }
    if (packed()) {
      auto q = [&](const std::string& leaf) -> const QuantizedMatrix* {
        auto it = quantized->find(N(leaf));
        QF_CHECK(it != quantized->end(), ck.path, ": ", N(leaf), " is not quantized");
        return &it->second;
      };
      const std::vector<std::vector<const QuantizedMatrix*>> parts = {
          {q("self_attn.q_proj.weight"), q("self_attn.k_proj.weight"), q("self_attn.v_proj.weight")},
          {q("self_attn.o_proj.weight")},
          {q("mlp.gate_proj.weight"), q("mlp.up_proj.weight")},
          {q("mlp.down_proj.weight")}};
      for (int g = 0; g < 4; ++g) {
        const std::vector<uint8_t> blob =
            w4a8 ? cuda::prepack_w4a8_weights(parts[size_t(g)]) : cuda::prepack_fpx_weights(parts[size_t(g)]);
        const size_t want = w4a8 ? cuda::w4a8_packed_layout(gemm_n[g], gemm_k[g]).total_bytes()
                                 : cuda::fpx_packed_layout(o.linears.fpx, gemm_n[g], gemm_k[g]).total_bytes();
        QF_CHECK(blob.size() == want, ck.path, ": layer ", i, " linear ", g, " has the wrong shape for this model");
        cuda::copy_to_device(L.blob[g], blob.data(), blob.size(), stream);
        stream.synchronize();  // `blob` is freed at the end of this iteration
      }
      upload(L.attn_norm, N("input_layernorm.weight"), 1, H, DType::F32);
      upload(L.mlp_norm, N("post_attention_layernorm.weight"), 1, H, DType::F32);
      continue;
    }
    upload(L.qkv, N("self_attn.q_proj.weight"), q_dim, H, DType::BF16);
    upload(L.qkv + q_dim * H, N("self_attn.k_proj.weight"), kv_dim, H, DType::BF16);
    upload(L.qkv + (q_dim + kv_dim) * H, N("self_attn.v_proj.weight"), kv_dim, H, DType::BF16);
    upload(L.o, N("self_attn.o_proj.weight"), H, q_dim, DType::BF16);
    upload(L.gu, N("mlp.gate_proj.weight"), F, H, DType::BF16);
    upload(L.gu + F * H, N("mlp.up_proj.weight"), F, H, DType::BF16);
    upload(L.down, N("mlp.down_proj.weight"), H, F, DType::BF16);
    upload(L.attn_norm, N("input_layernorm.weight"), 1, H, DType::F32);
    upload(L.mlp_norm, N("post_attention_layernorm.weight"), 1, H, DType::F32);
  }
}

void CudaEngine::Impl::fill_synthetic(uint64_t seed) {
  using cuda::RandomSpec;
  using cuda::RandomType;
  uint64_t s = seed * 1000003;
  auto normal = [&](void* p, size_t n, double stddev) {
    cuda::fill_random(p, RandomType::bf16, n, RandomSpec::normal_with(0.f, float(stddev)), ++s, stream);
  };
  // Norm weights near 1 (as trained models' are, roughly), never exactly 1.
  auto norm = [&](float* p) { cuda::fill_random(p, RandomType::f32, size_t(H), RandomSpec::uniform_in(0.8f, 1.2f), ++s, stream); };
  normal(embed, size_t(V * H), 1.0);
  if (!c.tie_word_embeddings) normal(head, size_t(V * H), 1.0 / std::sqrt(double(H)));
  norm(final_norm);
  for (Layer& L : layers) {
    if (w4a8) {
      // Codes uniform over the 16 (every nibble occurs), group scales E4M3 in [8, 16], and a row
      // scale that makes the weights' spread 1/sqrt(in) like the BF16 case: q has standard
      // deviation ~4.6 and sigma ~12 on average, so t ~ 1 / (55 sqrt(in)).
      for (int g = 0; g < 4; ++g) {
        const cuda::W4a8PackedLayout l = cuda::w4a8_packed_layout(gemm_n[g], gemm_k[g]);
        const float t = float(1.0 / (55.0 * std::sqrt(double(gemm_k[g]))));
        cuda::fill_random(L.blob[g], RandomType::fp8_e4m3, l.code_bytes(), RandomSpec::uniform_in(-448.f, 448.f), ++s, stream);
        cuda::fill_random(L.blob[g] + l.scale_offset(), RandomType::fp8_e4m3, size_t(l.n * l.scale_stride()),
                          RandomSpec::uniform_in(8.f, 16.f), ++s, stream);
        cuda::fill_random(L.blob[g] + l.row_scale_offset(), RandomType::f32, size_t(l.n),
                          RandomSpec::uniform_in(0.9f * t, 1.1f * t), ++s, stream);
      }
      norm(L.attn_norm);
      norm(L.mlp_norm);
      continue;
    }
    if (fpx) {
      // Codes uniform over the whole code space (random bytes, as qforge bench gemm makes them),
      // channel scales 1 / (rms * sqrt(in)) with rms the root mean square of the type's values
      // over uniform codes, so that the weights' spread is 1/sqrt(in).
      double sum2 = 0;
      const int codes = 1 << ElementType::fpx(o.linears.fpx).bits();
      for (int cd = 0; cd < codes; ++cd) sum2 += double(fpx_decode(uint8_t(cd), o.linears.fpx)) * fpx_decode(uint8_t(cd), o.linears.fpx);
      const double rms = std::sqrt(sum2 / codes);
      for (int g = 0; g < 4; ++g) {
        const cuda::FpxPackedLayout l = cuda::fpx_packed_layout(o.linears.fpx, gemm_n[g], gemm_k[g]);
        const float sc = float(1.0 / (rms * std::sqrt(double(gemm_k[g]))));
        cuda::fill_random(L.blob[g], RandomType::fp8_e4m3, l.code_bytes(), RandomSpec::uniform_in(-448.f, 448.f), ++s, stream);
        cuda::fill_random(L.blob[g] + l.scale_offset(), RandomType::f32, l.scale_count(),
                          RandomSpec::uniform_in(0.9f * sc, 1.1f * sc), ++s, stream);
      }
      norm(L.attn_norm);
      norm(L.mlp_norm);
      continue;
    }
    // Weights ~ N(0, 1/in): each output of a linear layer keeps the unit scale of its inputs.
    normal(L.qkv, size_t(qkv_dim * H), 1.0 / std::sqrt(double(H)));
    normal(L.o, size_t(H * q_dim), 1.0 / std::sqrt(double(q_dim)));
    normal(L.gu, size_t(2 * F * H), 1.0 / std::sqrt(double(H)));
    normal(L.down, size_t(H * F), 1.0 / std::sqrt(double(F)));
    norm(L.attn_norm);
    norm(L.mlp_norm);
  }
  stream.synchronize();
}

Tensor CudaEngine::Impl::logits_tensor(int64_t rows) {
  const size_t bytes = size_t(rows * V) * sizeof(float);
  if (bytes == 0 || bytes > kMaxPinnedLogitsBytes) return Tensor::empty(DType::F32, {rows, V});
  std::shared_ptr<Pinned> buf;
  for (auto& b : pinned)
    if (b.use_count() == 1 && b->bytes >= bytes) {
      buf = b;
      break;
    }
  if (!buf) {
    buf = std::make_shared<Pinned>();
    QF_CUDA_CHECK(cudaMallocHost(&buf->p, bytes));
    buf->bytes = bytes;
    if (pinned.size() >= 4) {  // keep a few; drop a free one that is too small
      for (auto it = pinned.begin(); it != pinned.end(); ++it)
        if (it->use_count() == 1) {
          pinned.erase(it);
          break;
        }
    }
    pinned.push_back(buf);
  }
  return Tensor::borrow(DType::F32, {rows, V}, buf->p, buf);
}

void CudaEngine::Impl::upload_meta(size_t ints, size_t stage_ints) {
  QF_CHECK(ints <= off.stage && off.stage + stage_ints <= off.total, "internal: batch metadata overflow");
  QF_CUDA_CHECK(cudaMemcpyAsync(meta_dev, meta_host[meta_turn], ints * 4, cudaMemcpyHostToDevice, stream));
  if (stage_ints > 0)
    QF_CUDA_CHECK(cudaMemcpyAsync(meta_dev + off.stage, meta_host[meta_turn] + off.stage, stage_ints * 4,
                                  cudaMemcpyHostToDevice, stream));
  QF_CUDA_CHECK(cudaEventRecord(meta_copied[meta_turn], stream));
  meta_turn ^= 1;
  // The other host buffer may still be the source of a pending copy: wait for that copy only.
  QF_CUDA_CHECK(cudaEventSynchronize(meta_copied[meta_turn]));
}

// The decoder blocks and the final norm over T tokens (R query runs) whose metadata is on the
// device; leaves the final hidden states in `normed`.
void CudaEngine::Impl::enqueue_body(int64_t T, int64_t R, int max_q_len, bool decode) {
  const float eps = float(c.rms_norm_eps);
  mark("start");
  cuda::embedding(embed, V, H, meta(off.tok), T, hidden, stream);
  // The residual starts at zero so that layer 0's add_rmsnorm adds the embedding in.
  QF_CUDA_CHECK(cudaMemsetAsync(residual, 0, size_t(T * H) * 4, stream));
  mark("embedding");
  const int splits = decode ? cuda::decode_attention_num_splits(int(T), att, int(o.slot_capacity), sm_count, kv_elem) : 1;
  for (size_t l = 0; l < layers.size(); ++l) {
    const Layer& L = layers[l];
    add_norm(hidden, T, L.attn_norm);
    mark("add+rmsnorm");
    linear(w4a8 ? nullptr : normed, L, kQkv, qkv, T);
    mark("linear qkv");
    // Queries rotated in place, keys rotated into the cache, values copied there.
    cuda::RopeKvOptions rope_opt;
    rope_opt.k_post_rope_scale = post_rope_scale[l];
    rope_opt.q_fp8 = o.attention.q_fp8;
    cuda::rope_kv_append(qkv, qkv_dim, int(c.num_heads), int(c.num_kv_heads), int(c.head_dim), meta(off.pos),
                         meta(off.kvslot), int(T), inv_freq, attention_factor, kv[l], rope_opt, stream);
    mark("rope+kv append");
    if (decode) {
      cuda::DecodeAttentionArgs a;
      a.shape = att;
      a.q = qkv;
      a.q_row_stride = qkv_dim;
      a.out = attn;
      a.out_row_stride = q_dim;
      a.num_seqs = int(T);
      a.seq_lens = meta(off.seq_len);
      a.cache = kv[l];
      a.block_table = meta(off.btab);
      a.max_blocks_per_seq = max_blocks;
      a.num_splits = splits;
      a.workspace = decode_ws;
      cuda::decode_attention(a, stream);
      mark("attention (decode)");
    } else {
      cuda::PrefillAttentionArgs a;
      a.shape = att;
      a.q = qkv;
      a.q_row_stride = qkv_dim;
      a.out = attn;
      a.out_row_stride = q_dim;
      a.num_seqs = int(R);
      a.q_start = meta(off.q_start);
      a.kv_past = meta(off.kv_past);
      a.max_q_len = max_q_len;
      a.cache = kv[l];
      a.block_table = meta(off.btab);
      a.max_blocks_per_seq = max_blocks;
      if (fp8_prefill) {
        // The pass's queries and its slots' cached K/V (this layer's new rows included) in E4M3.
        cuda::quantize_queries_fp8(qkv, qkv_dim, int(T), int(c.num_heads), int(c.head_dim), q8, q8_scale, stream);
        cuda::kv_cache_stage_fp8(kv[l], meta(off.btab), max_blocks, meta(off.st_run), meta(off.st_start),
                                 meta(off.st_len), stage_seqs, max_kv_len, kv8, stream);
        mark("kv stage (prefill fp8)");
        cuda::Fp8PrefillAttentionArgs f;
        f.shape = att;
        f.q = q8;
        f.q_row_stride = q_dim;
        f.q_scale = q8_scale;
        f.k = kv8.k8;
        f.vt = kv8.vt8;
        f.k_scale = kv8.k_scale;
        f.v_scale = kv8.v_scale;
        f.kv_rows = kv8.kv_rows;
        f.out = attn;
        f.out_row_stride = q_dim;
        f.num_seqs = int(R);
        f.q_start = meta(off.q_start);
        f.kv_start = meta(off.f8_start);
        f.kv_len = meta(off.f8_len);
        f.max_q_len = max_q_len;
        f.stages = 2;  // FlashAttention-3's order: measured faster than FireQ's 3 (docs/benchmarks.md)
        cuda::prefill_attention_fp8(f, stream);
        mark("attention (prefill fp8)");
      } else {
        if (kv_quantized()) {  // the pass's sequences' blocks, this layer's new rows included, in BF16
          cuda::kv_cache_dequantize_blocks(kv[l], meta(off.stage), meta(off.stage), stage_blocks, kv_staging, stream);
          mark("kv dequantize (prefill)");
          a.cache = kv_staging;
        }
        cuda::prefill_attention(a, stream);
        mark("attention (prefill)");
      }
    }
    linear(attn, L, kO, hidden, T);
    mark("linear o");
    add_norm(hidden, T, L.mlp_norm);
    mark("add+rmsnorm");
    if (fused_swiglu(T)) {
      cuda::gemv_bf16_swiglu(normed, L.gu, act, T, F, H, stream);
      mark("linear gate_up + silu*mul");
    } else {
      linear(w4a8 ? nullptr : normed, L, kGateUp, gu, T);
      mark("linear gate_up");
      if (w4a8) cuda::silu_mul_fp8(gu, gu + F, 2 * F, xq, xs, T, F, stream);
      else cuda::silu_mul(gu, gu + F, 2 * F, act, F, T, F, stream);
      mark("silu*mul");
    }
    linear(w4a8 ? nullptr : act, L, kDown, hidden, T);
    mark("linear down");
  }
  cuda::add_rmsnorm(residual, hidden, T, H, final_norm, eps, normed, stream);
  mark("add+rmsnorm");
}

void CudaEngine::Impl::enqueue_head(const bf16* rows, int64_t n) {
  head_lt.linear_bf16_f32out(rows, head, logits, n, V, H, stream);
  mark("lm head");
}

void CudaEngine::Impl::forward_decode(const Batch& b, const std::vector<int32_t>& table, float* out) {
  const int64_t B = b.size();
  int32_t* h = host_meta();
  for (int64_t i = 0; i < B; ++i) {
    const int32_t slot = b.slots[i], pos = b.positions[i];
    h[off.tok + i] = b.tokens[i];
    h[off.pos + i] = pos;
    h[off.kvslot + i] = table[size_t(slot) * max_blocks + pos / cuda::kKvBlockTokens] * cuda::kKvBlockTokens +
                        pos % cuda::kKvBlockTokens;
    h[off.seq_len + i] = pos + 1;
    std::memcpy(h + off.btab + i * max_blocks, table.data() + size_t(slot) * max_blocks, size_t(max_blocks) * 4);
  }
  upload_meta(off.btab + size_t(B) * max_blocks);

  const int bs = int(B);
  auto it = graphs.find(bs);
  if (it != graphs.end() && !profile) {
    QF_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
    ++replays;
  } else if (o.use_graphs && !profile && decode_seen[bs]++ >= 1) {
    cudaGraph_t g = nullptr;
    QF_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue_body(B, B, 1, true);
      enqueue_head(normed, B);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream, &broken);
      if (broken) cudaGraphDestroy(broken);
      throw;
    }
    QF_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    QF_CUDA_CHECK(e);
    graphs[bs] = exec;
    ++captured;
    QF_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    ++replays;
  } else {
    enqueue_body(B, B, 1, true);
    enqueue_head(normed, B);
  }
  cuda::copy_to_host(out, logits, size_t(B * V) * 4, stream);
}

void CudaEngine::Impl::forward_chunks(const Batch& b, const std::vector<int32_t>& table, float* out) {
  const int64_t M = b.size();
  int64_t out_row = 0;
  for (int64_t t0 = 0; t0 < M; t0 += tmax) {
    const int64_t t1 = std::min(M, t0 + tmax), T = t1 - t0;
    int32_t* h = host_meta();
    int64_t R = 0, L = 0;
    int max_q = 0;
    for (int64_t i = t0; i < t1; ++i) {
      const int32_t slot = b.slots[i], pos = b.positions[i];
      const int64_t j = i - t0;
      h[off.tok + j] = b.tokens[i];
      h[off.pos + j] = pos;
      h[off.kvslot + j] = table[size_t(slot) * max_blocks + pos / cuda::kKvBlockTokens] * cuda::kKvBlockTokens +
                          pos % cuda::kKvBlockTokens;
      if (b.want_logits[i]) h[off.rows + L++] = int32_t(j);
      if (i == t0 || b.slots[i - 1] != slot) {  // a new run of consecutive tokens of one slot
        h[off.q_start + R] = int32_t(j);
        h[off.kv_past + R] = pos;
        std::memcpy(h + off.btab + R * max_blocks, table.data() + size_t(slot) * max_blocks, size_t(max_blocks) * 4);
        if (R > 0) max_q = std::max(max_q, int(j - h[off.q_start + R - 1]));
        ++R;
      }
    }
    h[off.q_start + R] = int32_t(T);
    max_q = std::max(max_q, int(T - h[off.q_start + R - 1]));
    const size_t ints = off.btab + size_t(R) * max_blocks;
    if (fp8_prefill) {
      // One staged region per distinct slot (its longest run's keys), 128-row aligned; every run
      // of the slot reads that region with its own key count.
      std::map<int32_t, int> region_of;  // slot -> staged index
      stage_seqs = 0;
      max_kv_len = 0;
      int32_t next_start = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int32_t slot = b.slots[t0 + h[off.q_start + r]];
        const int32_t len = h[off.kv_past + r] + h[off.q_start + r + 1] - h[off.q_start + r];
        auto [it, fresh] = region_of.emplace(slot, stage_seqs);
        if (fresh) {
          h[off.st_run + stage_seqs] = int32_t(r);
          h[off.st_len + stage_seqs] = 0;
          ++stage_seqs;
        }
        h[off.st_len + it->second] = std::max(h[off.st_len + it->second], len);
        h[off.f8_len + r] = len;
      }
      for (int i = 0; i < stage_seqs; ++i) {
        h[off.st_start + i] = next_start;
        next_start += (h[off.st_len + i] + 127) / 128 * 128;
        max_kv_len = std::max(max_kv_len, int(h[off.st_len + i]));
      }
      QF_CHECK(next_start <= kv8.kv_rows, "internal: FP8 prefill staging overflow");
      for (int64_t r = 0; r < R; ++r)
        h[off.f8_start + r] = h[off.st_start + region_of[b.slots[t0 + h[off.q_start + r]]]];
    } else if (kv_quantized()) {
      // Every block the runs' attention reads: keys 0 .. past + run length - 1 of each run.
      std::vector<char> used(size_t(o.num_slots) * max_blocks, 0);
      stage_blocks = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t len = h[off.kv_past + r] + h[off.q_start + r + 1] - h[off.q_start + r];
        for (int64_t blk = 0; blk * cuda::kKvBlockTokens < len; ++blk) {
          const int32_t id = h[off.btab + r * max_blocks + blk];
          if (!used[size_t(id)]) {
            used[size_t(id)] = 1;
            h[off.stage + stage_blocks++] = id;
          }
        }
      }
    }
    upload_meta(ints, size_t(stage_blocks));
    enqueue_body(T, R, max_q, false);
    if (L == 0) continue;
    const bf16* rows = normed;
    if (L != T) {
      cuda::gather_rows(normed, H, meta(off.rows), L, head_in, stream);
      mark("gather logit rows");
      rows = head_in;
    }
    for (int64_t r0 = 0; r0 < L; r0 += head_rows) {
      const int64_t n = std::min(head_rows, L - r0);
      enqueue_head(rows + r0 * H, n);
      cuda::copy_to_host(out + (out_row + r0) * V, logits, size_t(n * V) * 4, stream);
    }
    out_row += L;
  }
}

CudaEngine::CudaEngine(const Checkpoint& checkpoint, const CudaEngineOptions& options,
                       const std::map<std::string, QuantizedMatrix>* quantized) {
  ModelConfig c = checkpoint.config;
  if (c.name.empty()) c.name = checkpoint.path;
  impl_ = std::make_unique<Impl>(c, options);
  impl_->upload_checkpoint(checkpoint, quantized);
  impl_->stream.synchronize();
}

CudaEngine::CudaEngine(const ModelConfig& config, const CudaEngineOptions& options, uint64_t seed) {
  impl_ = std::make_unique<Impl>(config, options);
  impl_->fill_synthetic(seed);
}

CudaEngine::~CudaEngine() = default;

const ModelConfig& CudaEngine::config() const { return impl_->c; }
std::string CudaEngine::describe() const {
  const Impl& I = *impl_;
  const std::string att = I.o.attention == CudaAttentionMode{} ? "" : ", " + cuda_attention_name(I.o.attention);
  if (I.w4a8) return str("cuda (", I.device_name, ", INT4 x FP8 linears (FireQ w4a8)", att, ")");
  if (I.fpx) return str("cuda (", I.device_name, ", ", cuda_linears_name(I.o.linears), " x BF16 linears (FP6-LLM)", att, ")");
  return str("cuda (", I.device_name, ", BF16", att, ")");
}
int CudaEngine::num_slots() const { return impl_->o.num_slots; }
int64_t CudaEngine::slot_capacity() const { return impl_->o.slot_capacity; }
int64_t CudaEngine::slot_length(int slot) const {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  return impl_->blocks->length(slot);
}
void CudaEngine::truncate(int slot, int64_t length) {
  QF_CHECK(slot >= 0 && slot < num_slots(), "slot ", slot, " does not exist (the engine has ", num_slots(), ")");
  const int64_t len = impl_->blocks->length(slot);
  QF_CHECK(length >= 0 && length <= len, "cannot truncate slot ", slot, " of ", len, " tokens to ", length);
  impl_->blocks->truncate(slot, int(length));
}
size_t CudaEngine::weight_bytes() const { return impl_->weight_bytes; }
size_t CudaEngine::decode_read_bytes() const { return impl_->decode_read_bytes; }
size_t CudaEngine::arena_bytes() const { return impl_->arena.capacity(); }
int CudaEngine::graphs_captured() const { return impl_->captured; }
int CudaEngine::graph_replays() const { return impl_->replays; }
void CudaEngine::set_use_graphs(bool on) { impl_->o.use_graphs = on; }

void CudaEngine::set_profiling(bool on) {
  impl_->profile = on;
  impl_->prof_marks.clear();
}

std::vector<std::pair<std::string, double>> CudaEngine::profile_ms() {
  Impl& I = *impl_;
  std::vector<std::pair<std::string, double>> out;
  if (I.prof_marks.empty()) return out;
  I.stream.synchronize();
  std::map<std::string, size_t> index;
  for (size_t i = 1; i < I.prof_marks.size(); ++i) {
    const auto& [name, ev] = I.prof_marks[i];
    if (std::string(name) == "start") continue;  // the gap between two passes is not an op
    float ms = 0;
    QF_CUDA_CHECK(cudaEventElapsedTime(&ms, I.prof_pool[I.prof_marks[i - 1].second], I.prof_pool[ev]));
    auto [it, fresh] = index.emplace(name, out.size());
    if (fresh) out.push_back({name, 0.0});
    out[it->second].second += ms;
  }
  I.prof_marks.clear();
  return out;
}

Tensor CudaEngine::forward(const Batch& batch) {
  Impl& I = *impl_;
  std::vector<int64_t> lengths(static_cast<size_t>(num_slots()));
  for (int s = 0; s < num_slots(); ++s) lengths[size_t(s)] = I.blocks->length(s);
  check_batch(batch, lengths, slot_capacity(), I.V);
  const int64_t M = batch.size();
  if (M == 0) return Tensor::empty(DType::F32, {0, I.V});

  // Room in the cache for every token of the batch; undone if the forward fails.
  std::vector<int64_t> after = lengths;
  for (int64_t i = 0; i < M; ++i) ++after[size_t(batch.slots[i])];
  for (int s = 0; s < num_slots(); ++s)
    if (after[size_t(s)] != lengths[size_t(s)]) I.blocks->grow(s, int(after[size_t(s)]));
  Tensor logits;
  try {
    logits = I.logits_tensor(batch.num_logits());
    float* out = const_cast<float*>(static_cast<const float*>(logits.raw()));  // ours until returned
    const std::vector<int32_t> table = I.blocks->block_tables();
    // A pure decode step: one token per slot, every logit wanted.
    bool decode = M <= num_slots() && M <= I.head_rows && batch.num_logits() == M;
    for (int s = 0; decode && s < num_slots(); ++s) decode = after[size_t(s)] - lengths[size_t(s)] <= 1;
    if (decode) I.forward_decode(batch, table, out);
    else I.forward_chunks(batch, table, out);
  } catch (...) {
    for (int s = 0; s < num_slots(); ++s)
      if (I.blocks->length(s) != int(lengths[size_t(s)])) I.blocks->truncate(s, int(lengths[size_t(s)]));
    throw;
  }
  return logits;
}

}  // namespace qf

#endif  // QF_HAVE_CUDA
