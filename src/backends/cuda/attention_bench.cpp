// The attention benchmark (attention_bench.h).
#include "backends/cuda/attention_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "backends/cuda/attention.h"
#include "backends/cuda/attention_fp8.h"
#include "backends/cuda/bench_timing.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/kv_cache.h"
#include "backends/cuda/random.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

const AttentionBenchShape kShapes[] = {
    {"llama2-7b", 32, 32, 128},
    {"llama3-8b", 32, 8, 128},
    {"llama2-70b", 64, 8, 128},
    {"smollm2-135m", 9, 3, 64},
};

// A paged cache holding `copies` independent caches of `seqs` sequences x `tokens` tokens
// (random data), each copy with its own blocks; block tables map each sequence's positions to
// a shuffled set of blocks, as a long-running server's cache would be.
// Quantized caches (`element`) hold random code bytes (every byte is a valid pair of INT4 codes;
// E4M3 codes uniform in +-448) and one constant F16 scale per row.
struct BenchCache {
  int copies = 0, seqs = 0, tokens = 0, blocks_per_seq = 0;
  int64_t blocks_per_copy = 0;
  KvElement element = KvElement::bf16;
  DeviceBuffer k, v, k_scale, v_scale, tables;
  KvLayerView view(const AttentionBenchShape& s, int copy) const {
    const int64_t rows = kv_pool_rows(blocks_per_copy, s.kv_heads);
    const size_t bytes = size_t(rows * kv_row_bytes(element, s.head_dim));
    KvLayerView v_{k.as<uint8_t>() + size_t(copy) * bytes, v.as<uint8_t>() + size_t(copy) * bytes, blocks_per_copy,
                   s.kv_heads, s.head_dim, element};
    if (element != KvElement::bf16) {
      v_.k_scale = k_scale.as<__half>() + size_t(copy) * size_t(rows);
      v_.v_scale = v_scale.as<__half>() + size_t(copy) * size_t(rows);
    }
    return v_;
  }
  const int32_t* table(int copy) const { return tables.as<int32_t>() + size_t(copy) * seqs * blocks_per_seq; }
};

BenchCache make_cache(const AttentionBenchShape& s, int seqs, int tokens, int copies, uint64_t seed,
                      cudaStream_t stream, KvElement element = KvElement::bf16) {
  BenchCache c;
  c.element = element;
  c.copies = copies;
  c.seqs = seqs;
  c.tokens = tokens;
  c.blocks_per_seq = (tokens + kKvBlockTokens - 1) / kKvBlockTokens;
  c.blocks_per_copy = int64_t(seqs) * c.blocks_per_seq;
  const size_t elems = size_t(kv_pool_elements(c.blocks_per_copy, s.kv_heads, s.head_dim)) * size_t(copies);
  if (element == KvElement::bf16) {
    c.k = DeviceBuffer(elems * sizeof(bf16), "bench K cache");
    c.v = DeviceBuffer(elems * sizeof(bf16), "bench V cache");
    fill_random(c.k.data(), RandomType::bf16, elems, RandomSpec::normal_with(0.f, 1.f), seed, stream);
    fill_random(c.v.data(), RandomType::bf16, elems, RandomSpec::normal_with(0.f, 1.f), seed + 1, stream);
  } else {
    const size_t rows = elems / size_t(s.head_dim), bytes = rows * size_t(kv_row_bytes(element, s.head_dim));
    c.k = DeviceBuffer(bytes, "bench K cache codes");
    c.v = DeviceBuffer(bytes, "bench V cache codes");
    c.k_scale = DeviceBuffer(rows * 2, "bench K cache scales");
    c.v_scale = DeviceBuffer(rows * 2, "bench V cache scales");
    fill_random(c.k.data(), RandomType::fp8_e4m3, bytes, RandomSpec::uniform_in(-448.f, 448.f), seed, stream);
    fill_random(c.v.data(), RandomType::fp8_e4m3, bytes, RandomSpec::uniform_in(-448.f, 448.f), seed + 1, stream);
    fill_u16(c.k_scale.data(), 0x2C00, rows, stream);  // F16 0.0625
    fill_u16(c.v_scale.data(), 0x2C00, rows, stream);
  }
  std::vector<int32_t> tables(static_cast<size_t>(copies) * size_t(c.blocks_per_copy));
  std::mt19937_64 rng(seed);
  for (int copy = 0; copy < copies; ++copy) {
    auto first = tables.begin() + ptrdiff_t(copy) * c.blocks_per_copy;
    std::iota(first, first + c.blocks_per_copy, 0);
    std::shuffle(first, first + c.blocks_per_copy, rng);
  }
  c.tables = DeviceBuffer(tables.size() * sizeof(int32_t), "bench block tables");
  copy_to_device(c.tables.data(), tables.data(), tables.size() * sizeof(int32_t), stream);
  return c;
}

// Copies of a working set of `bytes` so that together they exceed 4x the L2 (at most 64, and
// at most ~8 GiB of them).
int rotation_copies(double bytes) {
  const double l2 = double(device_info().l2_bytes);
  int n = int(std::ceil(4.0 * l2 / std::max(bytes, 1.0)));
  n = std::min(n, int(std::floor(8.0 * (1ull << 30) / std::max(bytes, 1.0))));
  return std::clamp(n, 1, 64);
}

// launch(i) runs the i-th rotation of the case; warm-up, then per-launch events.
template <typename Launch>
Timing time_launches(const AttentionBenchOptions& o, int rotation, cudaStream_t stream, Launch&& launch) {
  for (int i = 0; i < std::max(3, rotation); ++i) launch(i % rotation);
  Event a, b;
  a.record(stream);
  for (int i = 0; i < 3; ++i) launch(i % rotation);
  b.record(stream);
  b.synchronize();
  const double est_ms = std::max(1e-3, double(b.elapsed_ms_since(a)) / 3.0);
  const int reps = std::clamp(int(o.target_ms / est_ms), o.min_reps, o.max_reps);
  std::vector<Event> starts(static_cast<size_t>(reps)), stops(static_cast<size_t>(reps));
  device_sleep(stream, 200000);  // 0.2 ms of queued work: launches are enqueued before they run
  for (int i = 0; i < reps; ++i) {
    starts[size_t(i)].record(stream);
    launch(i % rotation);
    stops[size_t(i)].record(stream);
  }
  stops.back().synchronize();
  std::vector<double> us(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) us[size_t(i)] = 1e3 * stops[size_t(i)].elapsed_ms_since(starts[size_t(i)]);
  return timing_of(std::move(us));
}

// A device copy of a host int32 array (the launches' per-sequence metadata).
DeviceBuffer upload(const std::vector<int32_t>& v, const char* what, cudaStream_t stream) {
  DeviceBuffer d(v.size() * sizeof(int32_t), what);
  copy_to_device(d.data(), v.data(), v.size() * sizeof(int32_t), stream);
  return d;
}

// The fields every row fills alike: what ran and its causal FLOPs (see the header).
AttentionBenchRow case_row(const std::string& kind, const AttentionBenchShape& s, int batch, int q_tokens, int past) {
  AttentionBenchRow row;
  row.kind = kind;
  row.model = s.model;
  row.heads = s.heads;
  row.kv_heads = s.kv_heads;
  row.head_dim = s.head_dim;
  row.batch = batch;
  row.q_tokens = q_tokens;
  row.past = past;
  row.kv_tokens = past + q_tokens;
  const double pairs = double(q_tokens) * past + double(q_tokens) * (q_tokens + 1) / 2.0;
  row.flops = 4.0 * s.head_dim * pairs * s.heads * batch;
  return row;
}

AttentionBenchRow timed(AttentionBenchRow row, const Timing& t) {
  row.median_us = t.median_us;
  row.min_us = t.min_us;
  row.max_us = t.max_us;
  row.reps = t.reps;
  return row;
}

AttentionBenchRow bench_prefill(const AttentionBenchOptions& o, const AttentionBenchShape& s,
                                const PrefillBenchCase& c, cudaStream_t stream) {
  AttentionBenchRow row = case_row("prefill", s, c.batch, c.tokens, c.past);
  const double q_bytes = double(c.tokens) * s.heads * s.head_dim * 2.0 * c.batch;
  const double kv_bytes = double(row.kv_tokens) * s.kv_heads * s.head_dim * 2.0 * 2.0 * c.batch;
  row.bytes = 2.0 * q_bytes + kv_bytes;  // q read, out written, K and V read once
  row.flop_floor_us = row.flops / (o.peak_tflops * 1e6);
  row.byte_floor_us = row.bytes / (o.copy_gb_s * 1e3);
  row.rotation_sets = rotation_copies(kv_bytes + 2.0 * q_bytes);

  const int rows_total = c.batch * c.tokens;
  const int64_t q_stride = int64_t(s.heads) * s.head_dim;
  const size_t q_elems = size_t(rows_total) * size_t(q_stride);
  DeviceBuffer q(q_elems * row.rotation_sets * sizeof(bf16), "bench queries");
  DeviceBuffer out(q_elems * sizeof(bf16), "bench output");
  fill_random(q.data(), RandomType::bf16, q_elems * row.rotation_sets, RandomSpec::normal_with(0.f, 1.f),
              o.seed + 7, stream);
  const BenchCache cache = make_cache(s, c.batch, row.kv_tokens, row.rotation_sets, o.seed, stream);
  std::vector<int32_t> q_start(static_cast<size_t>(c.batch) + 1), past(size_t(c.batch), c.past);
  for (int i = 0; i <= c.batch; ++i) q_start[size_t(i)] = i * c.tokens;
  const DeviceBuffer d_q_start = upload(q_start, "q_start", stream), d_past = upload(past, "past", stream);

  PrefillAttentionArgs a;
  a.shape = {s.heads, s.kv_heads, s.head_dim, 1.0f / std::sqrt(float(s.head_dim))};
  a.q_row_stride = q_stride;
  a.out = out.as<bf16>();
  a.out_row_stride = q_stride;
  a.num_seqs = c.batch;
  a.q_start = d_q_start.as<int32_t>();
  a.kv_past = d_past.as<int32_t>();
  a.max_q_len = c.tokens;
  a.max_blocks_per_seq = cache.blocks_per_seq;
  const Timing t = time_launches(o, row.rotation_sets, stream, [&](int i) {
    a.q = q.as<bf16>() + size_t(i) * q_elems;
    a.cache = cache.view(s, i);
    a.block_table = cache.table(i);
    prefill_attention(a, stream);
  });
  return timed(row, t);
}

// The FP8 kernel on the same case: random E4M3 codes (normal, sd 64: |code| up to 448) and
// scales (uniform 0.5..1.5 / 64), each sequence's keys at a 128-aligned kv row.
AttentionBenchRow bench_prefill_fp8(const AttentionBenchOptions& o, const AttentionBenchShape& s,
                                    const PrefillBenchCase& c, int stages, cudaStream_t stream) {
  AttentionBenchRow row = case_row(stages == 2 ? "prefill-fp8-2st" : "prefill-fp8-3st", s, c.batch, c.tokens, c.past);
  const int rows_total = c.batch * c.tokens;
  const int64_t q_stride = int64_t(s.heads) * s.head_dim;  // bytes (codes) and elements (out)
  const int64_t kv_cap = (int64_t(row.kv_tokens) + 127) / 128 * 128;
  const int64_t kv_rows = kv_cap * c.batch;
  const double q_bytes = double(rows_total) * double(q_stride);
  const double kv_bytes = double(s.kv_heads) * double(kv_rows) * s.head_dim * 2.0;
  row.bytes = q_bytes + 2.0 * q_bytes + kv_bytes;  // q codes read, BF16 out written, K and V read once
  row.flop_floor_us = row.flops / (2.0 * o.peak_tflops * 1e6);
  row.byte_floor_us = row.bytes / (o.copy_gb_s * 1e3);
  row.rotation_sets = rotation_copies(q_bytes + kv_bytes);

  const size_t q_elems = size_t(rows_total) * size_t(q_stride);
  const size_t kv_elems = size_t(s.kv_heads) * size_t(kv_rows) * size_t(s.head_dim);
  const size_t scales = size_t(s.kv_heads) * size_t(kv_rows);
  const size_t rot = size_t(row.rotation_sets);
  DeviceBuffer q(q_elems * rot, "bench fp8 queries"), k(kv_elems * rot, "bench fp8 K"), vt(kv_elems * rot, "bench fp8 V^T");
  DeviceBuffer q_scale(size_t(rows_total) * size_t(s.heads) * sizeof(float), "bench q scales");
  DeviceBuffer k_scale(scales * sizeof(float), "bench k scales"), v_scale(scales * sizeof(float), "bench v scales");
  DeviceBuffer out(q_elems * sizeof(bf16), "bench output");
  const RandomSpec codes = RandomSpec::normal_with(0.f, 64.f), sc = RandomSpec::uniform_in(0.5f / 64, 1.5f / 64);
  fill_random(q.data(), RandomType::fp8_e4m3, q_elems * rot, codes, o.seed + 7, stream);
  fill_random(k.data(), RandomType::fp8_e4m3, kv_elems * rot, codes, o.seed + 8, stream);
  fill_random(vt.data(), RandomType::fp8_e4m3, kv_elems * rot, codes, o.seed + 9, stream);
  fill_random(q_scale.data(), RandomType::f32, size_t(rows_total) * size_t(s.heads), sc, o.seed + 10, stream);
  fill_random(k_scale.data(), RandomType::f32, scales, sc, o.seed + 11, stream);
  fill_random(v_scale.data(), RandomType::f32, scales, sc, o.seed + 12, stream);
  std::vector<int32_t> q_start(static_cast<size_t>(c.batch) + 1), kv_start(size_t(c.batch)),
      kv_len(size_t(c.batch), row.kv_tokens);
  for (int i = 0; i <= c.batch; ++i) q_start[size_t(i)] = i * c.tokens;
  for (int i = 0; i < c.batch; ++i) kv_start[size_t(i)] = int32_t(i * kv_cap);
  const DeviceBuffer d_q_start = upload(q_start, "q_start", stream), d_kv_start = upload(kv_start, "kv_start", stream),
                     d_kv_len = upload(kv_len, "kv_len", stream);

  Fp8PrefillAttentionArgs a;
  a.shape = {s.heads, s.kv_heads, s.head_dim, 1.0f / std::sqrt(float(s.head_dim))};
  a.q_row_stride = q_stride;
  a.q_scale = q_scale.as<float>();
  a.k_scale = k_scale.as<float>();
  a.v_scale = v_scale.as<float>();
  a.kv_rows = kv_rows;
  a.out = out.as<bf16>();
  a.out_row_stride = q_stride;
  a.num_seqs = c.batch;
  a.q_start = d_q_start.as<int32_t>();
  a.kv_start = d_kv_start.as<int32_t>();
  a.kv_len = d_kv_len.as<int32_t>();
  a.max_q_len = c.tokens;
  a.stages = stages;
  const Timing t = time_launches(o, row.rotation_sets, stream, [&](int i) {
    a.q = q.as<uint8_t>() + size_t(i) * q_elems;
    a.k = k.as<uint8_t>() + size_t(i) * kv_elems;
    a.vt = vt.as<uint8_t>() + size_t(i) * kv_elems;
    prefill_attention_fp8(a, stream);
  });
  return timed(row, t);
}

AttentionBenchRow bench_decode(const AttentionBenchOptions& o, const AttentionBenchShape& s, const DecodeBenchCase& c,
                               cudaStream_t stream, KvElement element = KvElement::bf16) {
  // One query at position context - 1: it sees all `context` keys (pairs = context).
  AttentionBenchRow row = case_row(
      element == KvElement::bf16 ? "decode" : element == KvElement::int4 ? "decode-int4" : "decode-fp8", s, c.batch, 1,
      c.context - 1);
  const double kv_bytes = double(c.context) * s.kv_heads * double(kv_row_bytes_with_scale(element, s.head_dim)) * 2.0 * c.batch;
  row.bytes = kv_bytes + 2.0 * double(s.heads) * s.head_dim * 2.0 * c.batch;
  row.flop_floor_us = row.flops / (o.peak_tflops * 1e6);
  row.byte_floor_us = row.bytes / (o.copy_gb_s * 1e3);
  row.rotation_sets = rotation_copies(kv_bytes);

  const AttentionShape shape{s.heads, s.kv_heads, s.head_dim, 1.0f / std::sqrt(float(s.head_dim))};
  row.splits = decode_attention_num_splits(c.batch, shape, c.context, device_info().sm_count, element);
  const int64_t q_stride = int64_t(s.heads) * s.head_dim;
  const size_t q_elems = size_t(c.batch) * size_t(q_stride);
  DeviceBuffer q(q_elems * sizeof(bf16), "bench queries"), out(q_elems * sizeof(bf16), "bench output");
  fill_random(q.data(), RandomType::bf16, q_elems, RandomSpec::normal_with(0.f, 1.f), o.seed + 7, stream);
  DeviceBuffer workspace(decode_attention_workspace_bytes(c.batch, shape, row.splits), "decode workspace");
  const BenchCache cache = make_cache(s, c.batch, c.context, row.rotation_sets, o.seed, stream, element);
  const std::vector<int32_t> lens(static_cast<size_t>(c.batch), c.context);
  const DeviceBuffer d_lens = upload(lens, "seq_lens", stream);

  DecodeAttentionArgs a;
  a.shape = shape;
  a.q = q.as<bf16>();
  a.q_row_stride = q_stride;
  a.out = out.as<bf16>();
  a.out_row_stride = q_stride;
  a.num_seqs = c.batch;
  a.seq_lens = d_lens.as<int32_t>();
  a.max_blocks_per_seq = cache.blocks_per_seq;
  a.num_splits = row.splits;
  a.workspace = workspace.data();
  const Timing t = time_launches(o, row.rotation_sets, stream, [&](int i) {
    a.cache = cache.view(s, i);
    a.block_table = cache.table(i);
    decode_attention(a, stream);
  });
  return timed(row, t);
}

}  // namespace

std::vector<std::string> known_attention_models() {
  std::vector<std::string> names;
  for (const auto& s : kShapes) names.push_back(s.model);
  return names;
}

AttentionBenchShape attention_bench_shape(const std::string& model) {
  for (const auto& s : kShapes)
    if (s.model == model) return s;
  std::string known;
  for (const auto& s : kShapes) known += (known.empty() ? "" : ", ") + s.model;
  fail("bench attention: unknown model '", model, "' (known: ", known, ")");
}

AttentionBenchReport run_attention_bench(const AttentionBenchOptions& o) {
  QF_CHECK(o.min_reps > 0 && o.max_reps >= o.min_reps && o.target_ms > 0, "bench attention: bad repetition options");
  QF_CHECK(o.peak_tflops > 0 && o.copy_gb_s > 0, "bench attention: the floors' rates must be positive");
  std::vector<AttentionBenchShape> shapes;
  for (const auto& m : o.models) shapes.push_back(attention_bench_shape(m));
  for (const auto& c : o.prefill)
    QF_CHECK(c.batch > 0 && c.tokens > 0 && c.past >= 0, "bench attention: bad prefill case ", c.batch, "x",
             c.tokens, " past ", c.past);
  for (const auto& c : o.decode)
    QF_CHECK(c.batch > 0 && c.context > 0, "bench attention: bad decode case ", c.batch, "x", c.context);

  AttentionBenchReport r;
  const DeviceInfo& dev = device_info();
  r.date_utc = utc_now();
  r.device = dev.name;
  r.sm_count = dev.sm_count;
  r.peak_tflops = o.peak_tflops;
  r.copy_gb_s = o.copy_gb_s;
  Stream stream;
  auto run_case = [&](const std::string& what, auto&& fn) {
    if (o.progress) o.progress(what);
    try {
      r.rows.push_back(fn());
    } catch (const Error& e) {
      r.errors.push_back(what + ": " + e.what());
      (void)cudaGetLastError();  // a launch error must not poison the next case
    }
  };
  for (const auto& s : shapes) {
    for (const auto& c : o.prefill) {
      const std::string name =
          s.model + " " + std::to_string(c.batch) + "x" + std::to_string(c.tokens) + " past " + std::to_string(c.past);
      const size_t before = r.rows.size();
      run_case("prefill " + name, [&] { return bench_prefill(o, s, c, stream); });
      const double bf16_us = r.rows.size() > before ? r.rows.back().median_us : 0.0;
      if (!o.fp8) continue;
      for (int stages : {2, 3})
        run_case("prefill fp8 " + std::to_string(stages) + "-stage " + name, [&] {
          AttentionBenchRow row = bench_prefill_fp8(o, s, c, stages, stream);
          row.vs_bf16 = bf16_us > 0 ? bf16_us / row.median_us : 0.0;
          return row;
        });
    }
    for (const auto& c : o.decode) {
      const std::string name = s.model + " batch " + std::to_string(c.batch) + " context " + std::to_string(c.context);
      const size_t before = r.rows.size();
      run_case("decode " + name, [&] { return bench_decode(o, s, c, stream); });
      const double bf16_us = r.rows.size() > before ? r.rows.back().median_us : 0.0;
      if (!o.decode_quantized) continue;
      for (KvElement e : {KvElement::int4, KvElement::fp8_e4m3})
        run_case(std::string("decode ") + kv_element_name(e) + " " + name, [&] {
          AttentionBenchRow row = bench_decode(o, s, c, stream, e);
          row.vs_bf16 = bf16_us > 0 ? bf16_us / row.median_us : 0.0;
          return row;
        });
    }
  }
  return r;
}

std::string attention_bench_table(const AttentionBenchReport& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "qforge bench attention  %s  %s (%d SMs); floors: %.0f TFLOP/s, %.0f GB/s\n",
                r.date_utc.c_str(), r.device.c_str(), r.sm_count, r.peak_tflops, r.copy_gb_s);
  s += line;
  s += "xfloor = time / max(FLOP floor, byte floor); prefill is bound by FLOPs, decode by bytes; FP8 rows\n"
       "(prefill-fp8-2st/3st: 2- and 3-stage pipelines) have their FLOP floor at 2x the BF16 rate; decode-int4 /\n"
       "decode-fp8 read quantized caches (their byte floor counts their bytes); xbf16 = the BF16 row's time / this\n"
       "row's time on the same case\n";
  std::string last;
  for (const auto& x : r.rows) {
    const std::string section = x.kind.rfind("prefill", 0) == 0 ? "prefill" : "decode";
    if (section != last) {
      std::snprintf(line, sizeof line, "\n%-15s %-13s %9s %5s %6s %6s %6s %9s %8s %8s %9s %6s %6s\n", section.c_str(),
                    "model", "heads", "batch", "q", "past", "splits", "us", "TFLOP/s", "GB/s", "floor us", "xfloor",
                    "xbf16");
      s += line;
      last = section;
    }
    const std::string heads = std::to_string(x.heads) + "/" + std::to_string(x.kv_heads) + "x" + std::to_string(x.head_dim);
    char vs[16] = "     -";
    if (x.vs_bf16 > 0) std::snprintf(vs, sizeof vs, "%6.2f", x.vs_bf16);
    std::snprintf(line, sizeof line, "%-15s %-13s %9s %5d %6d %6d %6d %9.1f %8.1f %8.0f %9.1f %6.2f %6s\n",
                  x.kind.c_str(), x.model.c_str(), heads.c_str(), x.batch, x.q_tokens, x.past, x.splits, x.median_us,
                  x.tflops(), x.gb_s(), x.floor_us(), x.median_us / x.floor_us(), vs);
    s += line;
  }
  if (!r.errors.empty()) {
    s += "\nfailed cases:\n";
    for (const auto& e : r.errors) s += "  " + e + "\n";
  }
  return s;
}

std::string attention_bench_json(const AttentionBenchReport& r) {
  nlohmann::json j;
  j["date_utc"] = r.date_utc;
  j["device"] = r.device;
  j["sm_count"] = r.sm_count;
  j["peak_tflops"] = r.peak_tflops;
  j["copy_gb_s"] = r.copy_gb_s;
  j["errors"] = r.errors;
  j["rows"] = nlohmann::json::array();
  for (const auto& x : r.rows)
    j["rows"].push_back({{"kind", x.kind},         {"model", x.model},
                         {"heads", x.heads},       {"kv_heads", x.kv_heads},
                         {"head_dim", x.head_dim}, {"batch", x.batch},
                         {"q_tokens", x.q_tokens}, {"past", x.past},
                         {"kv_tokens", x.kv_tokens}, {"splits", x.splits},
                         {"rotation_sets", x.rotation_sets}, {"median_us", x.median_us},
                         {"min_us", x.min_us},     {"max_us", x.max_us},
                         {"reps", x.reps},         {"flops", x.flops},
                         {"bytes", x.bytes},       {"tflops", x.tflops()},
                         {"gb_s", x.gb_s()},       {"flop_floor_us", x.flop_floor_us},
                         {"byte_floor_us", x.byte_floor_us}, {"of_floor", x.median_us / x.floor_us()},
                         {"vs_bf16", x.vs_bf16}});
  return j.dump(1);
}

}  // namespace qf::cuda
