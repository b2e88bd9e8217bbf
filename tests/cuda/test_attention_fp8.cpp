// FP8 prefill attention (attention_fp8.h) against an FP64 reference on the dequantized inputs, at
// the head shapes of Llama-3-8B (32 query / 8 KV heads x 128), Llama-2-7B (32 / 32 x 128) and
// SmolLM2-135M (9 / 3 x 64), for sequence lengths 1, 100, 2048 and 4096 and a batch of varying
// lengths with chunks after past tokens, both pipelines (stages 2 and 3) on the same inputs.
//
// Inputs: E4M3 codes of N(0,1) * 64 values (|code| <= ~300, no NaN codes) with per-row scales
// drawn in [0.5, 1.5] (q: x2, so scores have a standard deviation of ~2: the softmax is neither
// flat nor one-hot) and v scales spread over 8x, so the kernel's running max of v_scale (its FP8
// range factor F) changes along the keys; the varlen case also runs with INT4 codes -8..7 for K
// and V (the engine's INT4 cache) and with v scales rising 2x every 128 keys. K/V rows past a sequence's keys hold NaN codes and NaN scales, so a
// kernel that reads them poisons its output; the output starts as a NaN pattern with 8 padding
// columns per row that must stay untouched.
//
// Error bound, per output element (attention_fp8.cu derives the first two terms):
//   2^-4 * sum_j P_j |v_j|                   E4M3 rounding of the PV operand, normal range
//   + 2^-10 * vmax / 448 * sum_j |v_code_j| / l   ... its subnormal range (l: the row sum, >= 1)
//   + (2^-8 * A + 2^-11) * sum_j P_j |v_j|   tensor-core accumulation of S (A: the row's largest
//                                             softmax_scale * sum_d |q_d k_d| in log units: 4 k32
//                                             steps of <= 2^-13 each, x2 margin, x2 for numerator
//                                             and denominator) and of each block's P V (2 steps)
//   + 2^-8 * |ref|                            BF16 output rounding (2^-9), x2 margin
// A per-element worst case cannot catch every bug on long flat rows (a wrong key among 4000
// moves the output less than the bound), so each run must also meet the typical error:
// ||gpu - ref|| / ||ref|| <= 0.06 over the whole output (the E4M3 rounding errors of different
// keys are independent: ~2^-4/sqrt(3) ~ 0.036 at most, ~0.025 measured for uniform mantissas; a
// wrong permutation, scale or mask gives O(1)), and the short rows (1, 2, ... keys) are as strict
// as the per-element bound gets.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "backends/cuda/attention_fp8.h"
#include "backends/cuda/device.h"
#include "core/error.h"
#include "formats/fp8.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {


// K/V inputs: E4M3 codes of normal values; INT4 codes -8..7 (the engine's INT4 cache); or normal
// codes with v scales rising 2x every 128 keys (the kernel's running v_scale max then grows at
// every block, exercising the rescale of O by the factor's change).
enum class KvKind { normal, int4, rising_v };

struct SeqSpec {
  int q_len = 0, past = 0;
};

// Runs fn(i) for i in [0, n) on all cores (the FP64 reference of a 4096-token case is ~1e11
// operations).
template <typename Fn>
void parallel_for(int64_t n, Fn&& fn) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  std::atomic<int64_t> next{0};
  for (int64_t w = 0; w < workers; ++w)
    pool.emplace_back([&] {
      for (int64_t i = next++; i < n; i = next++) fn(i);
    });
  for (auto& t : pool) t.join();
}

class Fp8AttentionCase {
 public:
  Fp8AttentionCase(const HeadShape& m, std::vector<SeqSpec> seqs, KvKind kind, uint64_t seed)
      : m_(m), seqs_(std::move(seqs)), int4_kv_(kind == KvKind::int4), rising_v_(kind == KvKind::rising_v), seed_(seed) {
    std::mt19937_64 rng(seed);
    const int n = int(seqs_.size());
    q_start_.push_back(0);
    kv_rows_ = 0;
    for (const auto& s : seqs_) {
      q_start_.push_back(q_start_.back() + s.q_len);
      kv_start_.push_back(int32_t(kv_rows_));
      kv_len_.push_back(s.past + s.q_len);
      // Each sequence's rows rounded up to 128, plus 128 rows of NaN before the next one.
      kv_rows_ += (int64_t(kv_len_.back()) + 127) / 128 * 128 + 128;
    }
    rows_ = q_start_[size_t(n)];
    q_stride_ = int64_t(m_.heads) * kDim_ + 32;    // bytes: padding between rows, never read
    out_stride_ = int64_t(m_.heads) * kDim_ + 8;   // elements: 8 padding columns, never written
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> u01(0.f, 1.f);
    std::uniform_int_distribution<int> int4(-8, 7);
    auto code_of = [&](bool int4_code) -> uint8_t {
      return int4_code ? fp8_e4m3_encode(float(int4(rng))) : fp8_e4m3_encode(nd(rng) * 64.f);
    };
    q_.assign(size_t(rows_ * q_stride_), 0x7F);
    q_scale_.assign(size_t(rows_ * m_.heads), 0.f);
    for (int64_t r = 0; r < rows_; ++r)
      for (int h = 0; h < m_.heads; ++h) {
        for (int d = 0; d < kDim_; ++d) q_[size_t(r * q_stride_ + h * kDim_ + d)] = code_of(false);
        q_scale_[size_t(r * m_.heads + h)] = 2.f * (0.5f + u01(rng)) / 64.f;
      }
    const size_t kv_elems = size_t(m_.kv_heads) * size_t(kv_rows_);
    k_.assign(kv_elems * kDim_, 0x7F);  // NaN codes wherever no sequence has a key
    vt_.assign(kv_elems * kDim_, 0x7F);
    k_scale_.assign(kv_elems, NAN);
    v_scale_.assign(kv_elems, NAN);
    const float code_unit = int4_kv_ ? 1.f : 64.f;
    for (int s = 0; s < n; ++s)
      for (int kh = 0; kh < m_.kv_heads; ++kh)
        for (int j = 0; j < kv_len_[size_t(s)]; ++j) {
          const int64_t row = int64_t(kh) * kv_rows_ + kv_start_[size_t(s)] + j;
          for (int d = 0; d < kDim_; ++d) {
            k_[size_t(row * kDim_ + d)] = code_of(int4_kv_);
            vt_[size_t((int64_t(kh) * kDim_ + d) * kv_rows_ + kv_start_[size_t(s)] + j)] = code_of(int4_kv_);
          }
          k_scale_[size_t(row)] = (0.5f + u01(rng)) / code_unit;
          v_scale_[size_t(row)] = (0.25f + 1.75f * u01(rng)) / code_unit;  // 8x spread
          if (rising_v_) v_scale_[size_t(row)] *= std::exp2(float(j) / 128.f);
        }
    // Decoded codes (exact in float), for the reference and the twin.
    qf_.resize(q_.size());
    kf_.resize(k_.size());
    vf_.resize(vt_.size());
    for (size_t i = 0; i < q_.size(); ++i) qf_[i] = fp8_e4m3_decode(q_[i]);
    for (size_t i = 0; i < k_.size(); ++i) kf_[i] = fp8_e4m3_decode(k_[i]);
    for (size_t i = 0; i < vt_.size(); ++i) vf_[i] = fp8_e4m3_decode(vt_[i]);
    reference();
  }

  // The kernel's output with `stages`, as floats in its [rows][out_stride] layout.
  std::vector<float> run_gpu(int stages, cudaStream_t stream) const {
    DeviceArray<uint8_t> d_q(q_, stream, "fp8 attention q"), d_k(k_, stream, "k"), d_vt(vt_, stream, "vt");
    DeviceArray<float> d_qs(q_scale_, stream, "q scale"), d_ks(k_scale_, stream, "k scale"),
        d_vs(v_scale_, stream, "v scale");
    DeviceArray<int32_t> d_qstart(q_start_, stream, "q_start"), d_kvstart(kv_start_, stream, "kv_start"),
        d_kvlen(kv_len_, stream, "kv_len");
    DeviceArray<bf16> d_out(size_t(rows_ * out_stride_), "fp8 attention out");
    d_out.poison(stream);
    cuda::Fp8PrefillAttentionArgs a;
    a.shape = {m_.heads, m_.kv_heads, kDim_, 1.0f / std::sqrt(float(kDim_))};
    a.q = d_q.get();
    a.q_row_stride = q_stride_;
    a.q_scale = d_qs.get();
    a.k = d_k.get();
    a.vt = d_vt.get();
    a.k_scale = d_ks.get();
    a.v_scale = d_vs.get();
    a.kv_rows = kv_rows_;
    a.out = d_out.get();
    a.out_row_stride = out_stride_;
    a.num_seqs = int(seqs_.size());
    a.q_start = d_qstart.get();
    a.kv_start = d_kvstart.get();
    a.kv_len = d_kvlen.get();
    a.max_q_len = 0;
    for (const auto& s : seqs_) a.max_q_len = std::max(a.max_q_len, s.q_len);
    a.stages = stages;
    cuda::prefill_attention_fp8(a, stream);
    QF_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<bf16> out = d_out.download(stream);
    const int64_t width = int64_t(m_.heads) * kDim_;
    EXPECT_EQ(count_poisoned(out, 0, out.size()), rows_ * (out_stride_ - width))
        << "the padding columns must stay untouched (and every real element written)";
    return to_float(out);
  }

  // The CPU twin: the kernel's arithmetic in the same order per 64-key block (FP32 scores from
  // exact dot products, exp2 online softmax, w = p * v_scale * 448 / (running max v_scale) rounded
  // to E4M3, block products folded into O in FP32, BF16 output), including the CTA-wide details
  // that change rounding: which blocks a row's CTA (128 rows) visits and the running v_scale max
  // over every key of those blocks below kv_len.
  std::vector<float> twin() const {
    const int64_t width = int64_t(m_.heads) * kDim_;
    std::vector<float> out(size_t(rows_ * out_stride_), NAN);
    const int group = m_.heads / m_.kv_heads;
    const float scale_log2 = float((1.0 / std::sqrt(double(kDim_))) * 1.4426950408889634);
    parallel_for(rows_ * m_.heads, [&](int64_t task) {
      const int64_t r = task / m_.heads;
      const int h = int(task % m_.heads);
      const int s = int(std::upper_bound(q_start_.begin(), q_start_.end(), int32_t(r)) - q_start_.begin()) - 1;
      const int kh = h / group;
      const int q_len = seqs_[size_t(s)].q_len, kv_len = kv_len_[size_t(s)];
      const int i = int(r - q_start_[size_t(s)]);
      const int pos = kv_len - q_len + i;
      const int m0 = i / 128 * 128;
      const int last_pos = kv_len - q_len + m0 + std::min(128, q_len - m0) - 1;
      const int n_blocks = last_pos / 64 + 1;
      const int64_t row0 = int64_t(kh) * kv_rows_ + kv_start_[size_t(s)];
      const float qs = q_scale_[size_t(r * m_.heads + h)] * scale_log2;
      float m_run = -INFINITY, l_run = 0.f, v_run = 1e-30f;
      std::vector<float> o(kDim_, 0.f), o_blk(kDim_), w(64);
      for (int b = 0; b < n_blocks; ++b) {
        float z[64], mx = -INFINITY, vmax = 0.f;
        for (int n = 0; n < 64; ++n) {
          const int key = b * 64 + n;
          z[n] = -INFINITY;
          if (key >= kv_len) continue;
          vmax = std::max(vmax, v_scale_[size_t(row0 + key)]);
          if (key > pos) continue;
          const float* q = &qf_[size_t(r * q_stride_ + h * kDim_)];
          const float* k = &kf_[size_t((row0 + key) * kDim_)];
          double dot = 0;
          for (int d = 0; d < kDim_; ++d) dot += double(q[d]) * k[d];
          z[n] = float(dot) * k_scale_[size_t(row0 + key)] * qs;
          mx = std::max(mx, z[n]);
        }
        const float m_new = std::max(m_run, mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = std::exp2(m_run - m_use);
        m_run = m_new;
        const float v_new = std::max(v_run, vmax), ratio = v_run / v_new, f = 448.f / v_new;
        v_run = v_new;
        float sum = 0.f;
        for (int n = 0; n < 64; ++n) {
          const float p = std::exp2(z[n] - m_use);
          sum += p;
          const int key = b * 64 + n;
          w[size_t(n)] = key < kv_len ? fp8_e4m3_decode(fp8_e4m3_encode(p * (v_scale_[size_t(row0 + key)] * f))) : 0.f;
        }
        l_run = l_run * alpha + sum;
        const float c = alpha * ratio;
        for (int d = 0; d < kDim_; ++d) {
          float acc = 0.f;
          const int64_t vrow = (int64_t(kh) * kDim_ + d) * kv_rows_ + kv_start_[size_t(s)] + b * 64;
          for (int n = 0; n < 64 && b * 64 + n < kv_len; ++n) acc += w[size_t(n)] * vf_[size_t(vrow + n)];
          o[size_t(d)] = o[size_t(d)] * c + acc;
        }
      }
      const float inv = l_run > 0.f ? v_run / (448.f * l_run) : 0.f;
      for (int d = 0; d < kDim_; ++d)
        out[size_t(r * out_stride_ + h * kDim_ + d)] = bf16_to_float(float_to_bf16(o[size_t(d)] * inv));
    });
    (void)width;
    return out;
  }

  // Checks every output element of every row against the FP64 reference (see the top).
  void expect_close(const std::vector<float>& out, const std::string& what) const {
    SCOPED_TRACE(std::string(m_.name) + " " + what + " seed " + std::to_string(seed_));
    const int64_t width = int64_t(m_.heads) * kDim_;
    int64_t bad = 0, non_finite = 0;
    double diff2 = 0, ref2 = 0, worst = 0;
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t c = 0; c < width; ++c) {
        const double g = out[size_t(r * out_stride_ + c)];
        const double want = ref_[size_t(r * width + c)], bound = bound_[size_t(r * width + c)];
        if (!std::isfinite(g)) {
          if (++non_finite <= 5) ADD_FAILURE() << "row " << r << " col " << c << ": not finite (unwritten?)";
          continue;
        }
        const double err = std::fabs(g - want);
        diff2 += err * err;
        ref2 += want * want;
        worst = std::max(worst, err / bound);
        if (err > bound && ++bad <= 5)
          ADD_FAILURE() << "row " << r << " head " << c / kDim_ << " dim " << c % kDim_ << ": got " << g << " want "
                        << want << " (bound " << bound << ")";
      }
    const double rel = std::sqrt(diff2 / std::max(ref2, 1e-300));
    std::printf("  [%s %s] %lld rows: ||err||/||ref|| = %.4f, max err/bound = %.3f\n", m_.name, what.c_str(),
                static_cast<long long>(rows_), rel, worst);
    EXPECT_EQ(bad, 0) << "elements outside the bound";
    EXPECT_EQ(non_finite, 0);
    EXPECT_LE(rel, 0.06) << "typical error too large for E4M3 rounding of P alone";
  }

  // ||a - b|| / ||b|| over the real elements (GPU against the twin: a debugging aid).
  double rel_diff(const std::vector<float>& a, const std::vector<float>& b) const {
    double d2 = 0, b2 = 0;
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t c = 0; c < int64_t(m_.heads) * kDim_; ++c) {
        const double x = a[size_t(r * out_stride_ + c)], y = b[size_t(r * out_stride_ + c)];
        d2 += (x - y) * (x - y);
        b2 += y * y;
      }
    return std::sqrt(d2 / std::max(b2, 1e-300));
  }

 private:
  // FP64 reference and per-element bound (see the top of the file).
  void reference() {
    const int64_t width = int64_t(m_.heads) * kDim_;
    ref_.assign(size_t(rows_ * width), 0.0);
    bound_.assign(size_t(rows_ * width), 0.0);
    const double scale = 1.0 / std::sqrt(double(kDim_));
    const std::vector<float>&qf = qf_, &kf = kf_, &vf = vf_;
    const int group = m_.heads / m_.kv_heads;
    parallel_for(rows_ * m_.heads, [&](int64_t task) {
      const int64_t r = task / m_.heads;
      const int h = int(task % m_.heads);
      const int s = int(std::upper_bound(q_start_.begin(), q_start_.end(), int32_t(r)) - q_start_.begin()) - 1;
      const int kh = h / group;
      const int64_t i = r - q_start_[size_t(s)];
      const int64_t keys = kv_len_[size_t(s)] - seqs_[size_t(s)].q_len + i + 1;
      const int64_t row0 = int64_t(kh) * kv_rows_ + kv_start_[size_t(s)];
      const float* q = &qf[size_t(r * q_stride_ + h * kDim_)];
      const double qs = q_scale_[size_t(r * m_.heads + h)];
      std::vector<double> z(static_cast<size_t>(keys)), v_row(kDim_, 0.0), v_abs(kDim_, 0.0), code_abs(kDim_, 0.0);
      double zmax = -INFINITY, amax = 0, vmax = 0;
      for (int64_t j = 0; j < kv_len_[size_t(s)]; ++j) vmax = std::max(vmax, double(v_scale_[size_t(row0 + j)]));
      for (int64_t j = 0; j < keys; ++j) {
        const float* k = &kf[size_t((row0 + j) * kDim_)];
        double dot = 0, adot = 0;
        for (int d = 0; d < kDim_; ++d) {
          const double p = double(q[d]) * double(k[d]);
          dot += p;
          adot += std::fabs(p);
        }
        const double f = scale * qs * k_scale_[size_t(row0 + j)];
        z[size_t(j)] = f * dot;
        amax = std::max(amax, f * adot);
        zmax = std::max(zmax, z[size_t(j)]);
      }
      double l = 0;
      for (auto& x : z) l += (x = std::exp(x - zmax));
      // P V with V^T rows contiguous in the keys.
      const float* vt = &vf[size_t(int64_t(kh) * kDim_ * kv_rows_ + kv_start_[size_t(s)])];
      for (int64_t j = 0; j < keys; ++j) z[size_t(j)] *= v_scale_[size_t(row0 + j)] / l;  // now P_j * v_scale_j
      for (int d = 0; d < kDim_; ++d) {
        const float* vd = vt + int64_t(d) * kv_rows_;
        double acc = 0, acc_abs = 0, codes = 0;
        for (int64_t j = 0; j < keys; ++j) {
          const double c = vd[j];
          acc += z[size_t(j)] * c;
          acc_abs += z[size_t(j)] * std::fabs(c);
          codes += std::fabs(c);
        }
        v_row[size_t(d)] = acc;
        v_abs[size_t(d)] = acc_abs;
        code_abs[size_t(d)] = codes;
      }
      const double rel = std::ldexp(1.0, -4) + std::ldexp(1.0, -8) * amax + std::ldexp(1.0, -11);
      for (int d = 0; d < kDim_; ++d) {
        const size_t o = size_t(r * width + h * kDim_ + d);
        ref_[o] = v_row[size_t(d)];
        bound_[o] = rel * v_abs[size_t(d)] + std::ldexp(1.0, -10) * vmax / 448.0 * code_abs[size_t(d)] / l +
                    std::ldexp(1.0, -8) * std::fabs(v_row[size_t(d)]) + 1e-30;
      }
    });
  }

  HeadShape m_;
  int kDim_ = m_.head_dim;
  std::vector<SeqSpec> seqs_;
  bool int4_kv_, rising_v_;
  uint64_t seed_;
  std::vector<int32_t> q_start_, kv_start_, kv_len_;
  int64_t rows_ = 0, kv_rows_ = 0, q_stride_ = 0, out_stride_ = 0;
  std::vector<uint8_t> q_, k_, vt_;
  std::vector<float> q_scale_, k_scale_, v_scale_;
  std::vector<float> qf_, kf_, vf_;  // the codes decoded
  std::vector<double> ref_, bound_;
};

// The GPU kernel with both pipelines, against the reference (and, after a failure, the twin:
// near 0 means the kernel computes what was intended and the bound is wrong; O(1), a kernel bug).
void run_both(const HeadShape& m, std::vector<SeqSpec> seqs, KvKind kind = KvKind::normal) {
  cuda::Stream stream;
  Fp8AttentionCase c(m, std::move(seqs), kind, fresh_seed());
  for (int stages : {2, 3}) {
    const std::vector<float> got = c.run_gpu(stages, stream);
    c.expect_close(got, "stages " + std::to_string(stages));
    if (::testing::Test::HasFailure())  // the twin costs as much as the reference: only to diagnose
      std::printf("  [%s stages %d] ||gpu - twin|| / ||twin|| = %.4f\n", m.name, stages, c.rel_diff(got, c.twin()));
  }
}

// The CPU twin against the reference: runs without a GPU, and shows that the bound and the
// typical-error limit hold for the kernel's own arithmetic (so a GPU failure is the kernel's).
TEST(AttentionFp8Twin, MatchesReferenceWithinBound) {
  const std::vector<std::vector<SeqSpec>> cases = {{{1, 0}}, {{100, 0}}, {{37, 0}, {130, 200}, {1, 77}, {64, 64}}};
  for (const auto& seqs : cases) {
    Fp8AttentionCase c(kLlama3_8B, seqs, KvKind::normal, fresh_seed());
    c.expect_close(c.twin(), "twin");
  }
  Fp8AttentionCase c(kLlama2_7B, {{70, 30}, {5, 0}}, KvKind::int4, fresh_seed());
  c.expect_close(c.twin(), "twin int4");
  Fp8AttentionCase d(kSmolLM2, {{150, 0}, {3, 40}}, KvKind::normal, fresh_seed());
  d.expect_close(d.twin(), "twin");
  Fp8AttentionCase e(kLlama3_8B, {{200, 500}}, KvKind::rising_v, fresh_seed());
  e.expect_close(e.twin(), "twin rising v scales");
}

TEST(AttentionFp8, Llama3_8B_SingleSequences) {
  QF_REQUIRE_GPU();
  for (int len : {1, 100, 2048, 4096}) run_both(kLlama3_8B, {{len, 0}});
}

TEST(AttentionFp8, Llama2_7B_SingleSequences) {
  QF_REQUIRE_GPU();
  for (int len : {1, 100, 2048, 4096}) run_both(kLlama2_7B, {{len, 0}});
}

// Head dim 64 (the default model's shape, 9 query / 3 KV heads).
TEST(AttentionFp8, SmolLM2_HeadDim64) {
  QF_REQUIRE_GPU();
  for (int len : {1, 100, 2048}) run_both(kSmolLM2, {{len, 0}});
}

// A batch of different lengths: a chunk after 700 cached tokens, a single token after 512 (its
// only row sees 513 keys), lengths that are not multiples of the 64-key block or of 128 rows.
TEST(AttentionFp8, VarlenBatchWithPast) {
  QF_REQUIRE_GPU();
  const std::vector<SeqSpec> seqs = {{37, 0}, {300, 700}, {129, 0}, {1, 512}, {200, 3}, {64, 64}};
  run_both(kLlama3_8B, seqs);
  run_both(kLlama2_7B, seqs);
  run_both(kLlama3_8B, seqs, KvKind::int4);
  run_both(kSmolLM2, seqs, KvKind::int4);
  run_both(kLlama3_8B, seqs, KvKind::rising_v);
}

// The launcher rejects what the kernel cannot do before touching the device.
TEST(AttentionFp8, RejectsUnsupportedArguments) {
  cuda::Fp8PrefillAttentionArgs a;
  a.shape = {32, 8, 96, 0.125f};
  a.num_seqs = 1;
  a.max_q_len = 1;
  EXPECT_THROW(cuda::prefill_attention_fp8(a, nullptr), Error);  // head_dim 96
  a.shape.head_dim = 128;
  a.stages = 4;
  EXPECT_THROW(cuda::prefill_attention_fp8(a, nullptr), Error);
  a.stages = 3;
  a.shape.num_kv_heads = 5;
  EXPECT_THROW(cuda::prefill_attention_fp8(a, nullptr), Error);
}

}  // namespace
}  // namespace qf::testing
