#include "quant/rope_scale.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace qf {

KeyStatistics::KeyStatistics(int64_t kv_heads, int64_t d)
    : num_kv_heads(kv_heads), head_dim(d), pair_norm_max(size_t(kv_heads * (d / 2)), 0.0f),
      rotated_absmax(size_t(kv_heads * d), 0.0f) {
  QF_CHECK(kv_heads >= 1 && d >= 2 && d % 2 == 0, "RoPE-aware scaling: ", kv_heads, " KV heads of head_dim ", d,
           " (head_dim must be even)");
}

void KeyStatistics::add(const float* k_pre, const float* k_post, int64_t n, int64_t stride) {
  const int64_t d = head_dim, half = d / 2;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = k_pre + t * stride;
    const float* b = k_post + t * stride;
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      for (int64_t j = 0; j < half; ++j) {
        const float x = a[h * d + j], y = a[h * d + j + half];
        const float norm = float(std::sqrt(double(x) * x + double(y) * y));
        QF_CHECK(std::isfinite(norm), "RoPE-aware scaling: a key value is not finite (token ", tokens + t, ")");
        float& m = pair_norm_max[size_t(h * half + j)];
        m = std::max(m, norm);
      }
      for (int64_t c = 0; c < d; ++c) {
        float& m = rotated_absmax[size_t(h * d + c)];
        m = std::max(m, std::fabs(b[h * d + c]));
      }
    }
  }
  tokens += n;
}

RopeScales rope_aware_scales(const KeyStatistics& st, const RopeScaleTransform& t) {
  const int64_t d = st.head_dim, half = d / 2, n = st.num_kv_heads * d;
  QF_CHECK(t.alpha > 0 && t.beta > 0 && std::isfinite(t.alpha) && std::isfinite(t.beta) && t.top_k >= 1,
           "RoPE-aware scaling: alpha ", t.alpha, ", beta ", t.beta, " must be finite and > 0, top_k ", t.top_k,
           " >= 1");
  auto ratio = [](float target, float m) { return m > 0 && std::isfinite(m) && std::isfinite(target / m) ? target / m : 1.0f; };
  RopeScales s;
  if (t.pre) {
    s.pre.assign(size_t(n), 1.0f);
    for (int64_t h = 0; h < st.num_kv_heads; ++h)
      for (int64_t j = 0; j < half; ++j) {
        const float v = ratio(t.alpha, st.pair_norm_max[size_t(h * half + j)]);
        s.pre[size_t(h * d + j)] = s.pre[size_t(h * d + j + half)] = v;
      }
  }
  if (t.post) {
    s.post.assign(size_t(n), 1.0f);
    const int64_t k = std::min<int64_t>(t.top_k, d);
    for (int64_t h = 0; h < st.num_kv_heads; ++h) {
      const float* m = st.rotated_absmax.data() + h * d;
      std::vector<int64_t> order(static_cast<size_t>(d));
      std::iota(order.begin(), order.end(), int64_t(0));
      // The largest first; ties by the lower channel, so the choice is deterministic.
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return m[a] > m[b] || (m[a] == m[b] && a < b); });
      std::vector<bool> chosen(static_cast<size_t>(half), false);
      for (int64_t i = 0; i < k; ++i) chosen[size_t(order[size_t(i)] % half)] = true;
      // The level the chosen channels are brought to. With the pre-RoPE scale, every other pair
      // has max norm alpha, and FireQ's beta is meant against it: target beta. Without it, the
      // other pairs keep their own level, the largest of their max norms: target
      // beta / alpha x that level (an absolute beta = 1 would shrink the outliers far below
      // the rest, and the INT4 cache would round them to zero).
      float target = t.beta;
      if (!t.pre) {
        float level = 0;
        for (int64_t j = 0; j < half; ++j)
          if (!chosen[size_t(j)]) level = std::max(level, st.pair_norm_max[size_t(h * half + j)]);
        if (level > 0 && std::isfinite(level)) target = t.beta / t.alpha * level;
      }
      for (int64_t i = 0; i < k; ++i) {
        const int64_t c = order[size_t(i)], partner = c < half ? c + half : c - half;
        for (int64_t ch : {c, partner}) {
          s.post[size_t(h * d + ch)] = ratio(target, m[ch]);
          if (t.pre) s.pre[size_t(h * d + ch)] = 1.0f;  // the whole pair: both channels are in the loop
        }
      }
    }
  }
  return s;
}

void merge_pre_rope_scale(float* q, float* k, int64_t cols, const std::vector<float>& pre, int64_t num_heads,
                          int64_t num_kv_heads, int64_t head_dim) {
  QF_CHECK(int64_t(pre.size()) == num_kv_heads * head_dim && num_heads % num_kv_heads == 0,
           "merge_pre_rope_scale: ", pre.size(), " scales for ", num_kv_heads, " KV heads of ", head_dim);
  const int64_t group = num_heads / num_kv_heads;
  for (int64_t r = 0; r < num_kv_heads * head_dim; ++r) {
    float* row = k + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] *= pre[size_t(r)];
  }
  for (int64_t r = 0; r < num_heads * head_dim; ++r) {
    const float s = pre[size_t((r / head_dim / group) * head_dim + r % head_dim)];
    float* row = q + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] /= s;
  }
}

void apply_post_rope_scale(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                           int64_t num_heads, int64_t num_kv_heads, int64_t head_dim) {
  const int64_t group = num_heads / num_kv_heads, kv_dim = num_kv_heads * head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    float* kr = k + t * k_stride;
    for (int64_t i = 0; i < kv_dim; ++i) kr[i] *= post[i];
    float* qr = q + t * q_stride;
    for (int64_t qh = 0; qh < num_heads; ++qh) {
      const float* s = post + (qh / group) * head_dim;
      for (int64_t c = 0; c < head_dim; ++c) qr[qh * head_dim + c] /= s[c];
    }
  }
}

}  // namespace qf
