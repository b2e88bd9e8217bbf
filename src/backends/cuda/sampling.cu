// Token sampling kernel (definition in sampling.h).
//
// One CTA of 1024 threads per row. Nothing is sorted in full: the ranking is walked in chunks
// of 1024 positions, and only the current chunk is sorted (in shared memory).
//
// Ranking code. Token i gets the 64-bit code (~key(l_i) << 32) | i, where key is the usual
// order-preserving map of a float's bits to an unsigned integer: ascending codes are exactly
// the CPU's ranking (larger logit first, lower id first on ties), and every code is distinct.
//
// select_rank(r) finds the code at ranking position r with a radix select: 8 bits at a time from
// the top, a shared-memory histogram of the codes that match the digits fixed so far, then the
// digit holding position r (up to 4 passes over the logit key and 3 over the id bits, but it
// stops as soon as the chosen digit holds a single code, usually after 2-4 passes).
//
// A chunk of positions [start, start + n) is then the set of codes in (code(start - 1),
// code(start + n - 1)]: one gathering pass into shared memory, a bitonic sort of 1024 codes, and
// the chunk's probabilities, prefix sums (double) and the first position crossing a target.
//
// Per row: argmax (greedy rows stop here), Z (from chunk 0 when the top_k tokens fit in it,
// else one pass of double exps over the vocabulary), the top_p walk, then the sampling walk.
// With top_k <= 1024 or a nucleus inside the first 1024 tokens both walks stay in chunk 0:
// about 8 passes over the row's logits (L2-resident), tens of microseconds per row, all rows in
// parallel. A flat distribution whose nucleus spans many chunks costs one select per chunk.
#include <climits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/sampling.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = kThreads;  // ranking positions handled per step: one per thread
constexpr uint64_t kAfterAll = ~0ull;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float load_logit(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_logit(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }

__device__ __forceinline__ uint64_t rank_code(float logit, int id) {
  const float x = logit == 0.0f ? 0.0f : logit;  // -0 ranks as +0 (equal on the CPU)
  const uint32_t b = __float_as_uint(x);
  const uint32_t key = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // larger float -> larger key
  return (uint64_t(~key) << 32) | uint32_t(id);
}

__device__ __forceinline__ int code_id(uint64_t code) { return int(uint32_t(code)); }

struct SampleShared {
  uint64_t codes[kChunk];
  double dscratch[kWarps];
  int iscratch[kWarps];
  unsigned hist[256];
  uint64_t found;
  unsigned count;
  int digit;
  unsigned digit_before;
  unsigned digit_count;
  double value;
};

__device__ double block_sum(double v, SampleShared& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) v += __shfl_xor_sync(kFull, v, off);
  if (lane == 0) sm.dscratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += sm.dscratch[w];  // same order in every thread
  __syncthreads();
  return total;
}

__device__ int block_min(int v, SampleShared& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) v = min(v, __shfl_xor_sync(kFull, v, off));
  if (lane == 0) sm.iscratch[warp] = v;
  __syncthreads();
  int m = INT_MAX;
  for (int w = 0; w < kWarps; ++w) m = min(m, sm.iscratch[w]);
  __syncthreads();
  return m;
}

// Inclusive prefix sum of one double per thread, in thread order.
__device__ double block_inclusive_scan(double v, SampleShared& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const double n = __shfl_up_sync(kFull, v, off);
    if (lane >= off) v += n;
  }
  if (lane == 31) sm.dscratch[warp] = v;
  __syncthreads();
  double offset = 0.0;
  for (int w = 0; w < warp; ++w) offset += sm.dscratch[w];
  __syncthreads();
  return v + offset;
}

// The largest logit, lowest id on ties (the CPU's argmax).
template <typename T>
__device__ void block_argmax(const T* logits, int vocab, SampleShared& sm, float& best, int& best_id) {
  best = -INFINITY;
  best_id = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float l = load_logit(logits, i);
    if (l > best || (l == best && i < best_id)) {
      best = l;
      best_id = i;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) {
    const float ol = __shfl_xor_sync(kFull, best, off);
    const int oi = __shfl_xor_sync(kFull, best_id, off);
    if (ol > best || (ol == best && oi < best_id)) {
      best = ol;
      best_id = oi;
    }
  }
  if (lane == 0) {
    sm.dscratch[warp] = best;
    sm.iscratch[warp] = best_id;
  }
  __syncthreads();
  best = float(sm.dscratch[0]);
  best_id = sm.iscratch[0];
  for (int w = 1; w < kWarps; ++w) {
    const float ol = float(sm.dscratch[w]);
    const int oi = sm.iscratch[w];
    if (ol > best || (ol == best && oi < best_id)) {
      best = ol;
      best_id = oi;
    }
  }
  __syncthreads();
}

// The code at ranking position `rank` (0-based, < vocab). See the file comment.
template <typename T>
__device__ uint64_t select_rank(const T* logits, int vocab, int rank, SampleShared& sm) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint64_t prefix = 0, mask = 0;
  unsigned remaining = unsigned(rank);
#pragma unroll 1
  for (int p = 0; p < 7; ++p) {
    // Digits: the 4 bytes of the key (shifts 56..32), then the id's bytes 2..0 (shifts
    // 16..0; ids < 2^24, so byte 3 is 0 in every code).
    const int shift = p < 4 ? 56 - 8 * p : 16 - 8 * (p - 4);
    for (int i = threadIdx.x; i < 256; i += kThreads) sm.hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < vocab; base += kThreads) {
      const int i = base + threadIdx.x;
      int bin = -1;
      if (i < vocab) {
        const uint64_t c = rank_code(load_logit(logits, i), i);
        if ((c & mask) == prefix) bin = int((c >> shift) & 255);
      }
      // Logits cluster in a few bins: aggregate equal bins of the warp into one atomic.
      const unsigned peers = __match_any_sync(kFull, bin);
      if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sm.hist[bin], unsigned(__popc(peers)));
    }
    __syncthreads();
    if (warp == 0) {
      unsigned local[8], sum = 0;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        local[k] = sm.hist[lane * 8 + k];
        sum += local[k];
      }
      unsigned incl = sum;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const unsigned n = __shfl_up_sync(kFull, incl, off);
        if (lane >= off) incl += n;
      }
      unsigned acc = incl - sum;
      if (acc <= remaining && remaining < incl) {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (remaining < acc + local[k]) {
            sm.digit = lane * 8 + k;
            sm.digit_before = acc;
            sm.digit_count = local[k];
            break;
          }
          acc += local[k];
        }
      }
    }
    __syncthreads();
    const int digit = sm.digit;
    const unsigned before = sm.digit_before, count = sm.digit_count;
    __syncthreads();  // everyone has read the digit before the next pass overwrites it
    remaining -= before;
    prefix |= uint64_t(digit) << shift;
    mask |= uint64_t(255) << shift;
    if (count == 1) {  // a single code left: fetch it instead of resolving the other digits
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const uint64_t c = rank_code(load_logit(logits, i), i);
        if ((c & mask) == prefix) sm.found = c;
      }
      __syncthreads();
      const uint64_t found = sm.found;
      __syncthreads();
      return found;
    }
  }
  return prefix;  // every digit fixed (id byte 3 is 0 in every code)
}

// Ascending bitonic sort of sm.codes (kChunk entries, one per thread).
__device__ void block_sort_codes(SampleShared& sm) {
  const int i = threadIdx.x;
#pragma unroll 1
  for (int k = 2; k <= kChunk; k *= 2) {
#pragma unroll 1
    for (int j = k / 2; j > 0; j /= 2) {
      const int partner = i ^ j;
      if (partner > i) {
        const uint64_t a = sm.codes[i], b = sm.codes[partner];
        const bool ascending = (i & k) == 0;
        if ((a > b) == ascending) {
          sm.codes[i] = b;
          sm.codes[partner] = a;
        }
      }
      __syncthreads();
    }
  }
}

// Gathers the codes in (lo, hi] (lo ignored when first) into sm.codes, sorted, padded with
// kAfterAll. Returns how many were found.
template <typename T>
__device__ int gather_chunk(const T* logits, int vocab, bool first, uint64_t lo, uint64_t hi, SampleShared& sm) {
  if (threadIdx.x == 0) sm.count = 0;
  sm.codes[threadIdx.x] = kAfterAll;
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const uint64_t c = rank_code(load_logit(logits, i), i);
    if ((first || c > lo) && c <= hi) {
      const unsigned slot = atomicAdd(&sm.count, 1u);
      if (slot < kChunk) sm.codes[slot] = c;
    }
  }
  __syncthreads();
  const int n = int(sm.count);
  block_sort_codes(sm);
  return n;
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    sample_kernel(const T* __restrict__ logits_all, int64_t row_stride, int vocab,
                  const SamplingRow* __restrict__ rows, int32_t* __restrict__ tokens) {
  __shared__ SampleShared sm;
  const int row = blockIdx.x;
  const T* logits = logits_all + int64_t(row) * row_stride;
  const SamplingRow prm = rows[row];
  const int tid = threadIdx.x;

  float best;
  int best_id;
  block_argmax(logits, vocab, sm, best, best_id);
  if (prm.temperature <= 0.0 || prm.top_k == 1) {
    if (tid == 0) tokens[row] = best_id;
    return;
  }
  const double l_max = best;
  const double temperature = prm.temperature;
  // The CPU's p_i, same operations: (l_i - l_max) / temperature in double, then exp.
  auto mass = [&](float l) { return exp((double(l) - l_max) / temperature); };
  const int kept_by_k = prm.top_k > 0 && prm.top_k < vocab ? int(prm.top_k) : vocab;

  // The chunk in shared memory: which ranking positions it holds, and its last code.
  int chunk_start = -1, chunk_n = 0;
  uint64_t chunk_hi = 0;
  bool chunk_ok = true;
  auto load_chunk = [&](int start, int n) {
    if (start == chunk_start) return;
    const bool first = start == 0;
    // Walks go forward, so the previous chunk's last code is usually the lower bound.
    const uint64_t lo = first ? 0 : (chunk_start >= 0 && chunk_start + chunk_n == start)
                                        ? chunk_hi
                                        : select_rank(logits, vocab, start - 1, sm);
    const uint64_t hi = start + n == vocab ? kAfterAll : select_rank(logits, vocab, start + n - 1, sm);
    const int got = gather_chunk(logits, vocab, first, lo, hi, sm);
    chunk_ok = chunk_ok && got == n;  // not so only for NaN logits (no consistent ranking)
    chunk_start = start;
    chunk_n = n;
    chunk_hi = hi;
  };
  auto chunk_mass = [&](int n) { return tid < n ? mass(load_logit(logits, code_id(sm.codes[tid]))) : 0.0; };

  // ---- Z: the mass of the tokens top_k keeps ----
  double z;
  if (kept_by_k <= kChunk) {
    load_chunk(0, kept_by_k);
    z = block_sum(chunk_mass(kept_by_k), sm);
  } else {
    const uint64_t last = kept_by_k == vocab ? kAfterAll : select_rank(logits, vocab, kept_by_k - 1, sm);
    double part = 0.0;
    for (int i = tid; i < vocab; i += kThreads) {
      const float l = load_logit(logits, i);
      if (rank_code(l, i) <= last) part += mass(l);
    }
    z = block_sum(part, sm);
  }

  // ---- the walks: top_p (phase 0) sets how many tokens are kept and their mass, then the
  // sample (phase 1) finds the first kept token whose cumulative mass exceeds u * mass ----
  int kept = kept_by_k;
  double kept_mass = z;
  int result = -1;
  for (int phase = prm.top_p < 1.0 ? 0 : 1; phase < 2 && result < 0; ++phase) {
    const int limit = phase == 0 ? kept_by_k : kept;
    const double target = phase == 0 ? prm.top_p * z : prm.uniform * kept_mass;
    double cum = 0.0;
    bool crossed = false;
    for (int start = 0; start < limit; start += kChunk) {
      const int n = min(kChunk, limit - start);
      load_chunk(start, n);
      const double pre = cum + block_inclusive_scan(chunk_mass(n), sm);
      // Prefix sums of non-negative values; the first crossing is found by index, not count.
      const bool hit = tid < n && (phase == 0 ? pre >= target : pre > target);
      const int first = block_min(hit ? tid : INT_MAX, sm);
      if (first != INT_MAX) {
        if (phase == 0) {
          if (tid == first) sm.value = pre;
          __syncthreads();
          kept = start + first + 1;
          kept_mass = sm.value;
          __syncthreads();
        } else {
          result = code_id(sm.codes[first]);
        }
        crossed = true;
        break;
      }
      if (tid == n - 1) sm.value = pre;
      __syncthreads();
      cum = sm.value;
      __syncthreads();
    }
    if (!crossed) {
      if (phase == 0) {
        kept_mass = cum;  // top_p not reached within rounding: every token stays
      } else {
        // u * mass beyond the summed mass (rounding): the last kept token, as the CPU returns.
        load_chunk((kept - 1) / kChunk * kChunk, min(kChunk, kept - (kept - 1) / kChunk * kChunk));
        result = code_id(sm.codes[(kept - 1) % kChunk]);
      }
    }
  }
  if (tid == 0) tokens[row] = chunk_ok ? result : -1;
}

template <typename T>
void launch(const T* logits, int64_t row_stride, int64_t vocab, int num_rows, const SamplingRow* rows,
            int32_t* tokens, cudaStream_t stream) {
  QF_CHECK(num_rows >= 0, "sample_tokens: negative row count ", num_rows);
  if (num_rows == 0) return;
  QF_CHECK(vocab > 0 && vocab <= (int64_t(1) << 24), "sample_tokens: vocabulary of ", vocab,
           " tokens outside [1, 2^24]");
  QF_CHECK(row_stride >= vocab, "sample_tokens: row stride ", row_stride, " below the vocabulary ", vocab);
  QF_CHECK(logits && rows && tokens, "sample_tokens: null pointer");
  sample_kernel<T><<<num_rows, kThreads, 0, stream>>>(logits, row_stride, int(vocab), rows, tokens);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sample_tokens(const float* logits, int64_t row_stride, int64_t vocab, int num_rows, const SamplingRow* rows,
                   int32_t* tokens, cudaStream_t stream) {
  launch(logits, row_stride, vocab, num_rows, rows, tokens, stream);
}

void sample_tokens(const bf16* logits, int64_t row_stride, int64_t vocab, int num_rows, const SamplingRow* rows,
                   int32_t* tokens, cudaStream_t stream) {
  launch(logits, row_stride, vocab, num_rows, rows, tokens, stream);
}

}  // namespace qf::cuda
