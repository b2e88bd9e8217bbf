// Embedding gather kernel (embedding.h): one CTA per token, 16-byte copies of its row.
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/embedding.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

__global__ void embedding_kernel(const uint4* __restrict__ table, int64_t vocab, int64_t row_vecs,
                                 const int32_t* __restrict__ tokens, uint4* __restrict__ out) {
  pdl_begin();
  const int64_t i = blockIdx.x;
  const int32_t token = tokens[i];
  const bool ok = token >= 0 && token < vocab;
  // 0x7fc0: the canonical bf16 quiet NaN, eight per vector.
  const uint4 nan8 = make_uint4(0x7fc07fc0u, 0x7fc07fc0u, 0x7fc07fc0u, 0x7fc07fc0u);
  for (int64_t v = threadIdx.x; v < row_vecs; v += blockDim.x)
    out[i * row_vecs + v] = ok ? table[int64_t(token) * row_vecs + v] : nan8;
}

}  // namespace

void embedding(const bf16* table, int64_t vocab, int64_t dim, const int32_t* tokens, int64_t num_tokens, bf16* out,
               cudaStream_t stream) {
  QF_CHECK(num_tokens >= 0, "embedding: negative token count ", num_tokens);
  if (num_tokens == 0) return;
  QF_CHECK(vocab > 0 && dim > 0 && dim % 8 == 0, "embedding: table [", vocab, ", ", dim,
           "] needs a positive vocabulary and a dim that is a multiple of 8");
  QF_CHECK(num_tokens <= 0x7fffffff, "embedding: ", num_tokens, " tokens exceed one launch");
  QF_CHECK(table && tokens && out && aligned16(table) && aligned16(out),
           "embedding: table, tokens and out must be non-null, table and out 16-byte aligned");
  const int64_t row_vecs = dim / 8;
  const int threads = row_vecs >= 256 ? 256 : static_cast<int>((row_vecs + 31) / 32 * 32);
  launch_pdl(embedding_kernel, dim3(static_cast<unsigned>(num_tokens)), dim3(threads), 0, stream,
             reinterpret_cast<const uint4*>(table), vocab, row_vecs, tokens, reinterpret_cast<uint4*>(out));
}

}  // namespace qf::cuda
