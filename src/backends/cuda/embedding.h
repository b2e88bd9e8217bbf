// Embedding gather on the GPU: out[i, :] = table[tokens[i], :], BF16 table and output.
// CPU twin: cpu::embedding (backends/cpu/ops.h). The table is the model's token embedding
// converted to BF16 on load (whatever its file format).
//
// Token ids live on the device, so an id outside [0, vocab) cannot raise a qf::Error there:
// its output row is filled with NaN instead (never a read out of bounds), which every later
// check catches. The runtime validates ids on the host before uploading them.
// dim must be a multiple of 8; pointers 16-byte aligned.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

void embedding(const __nv_bfloat16* table, int64_t vocab, int64_t dim, const int32_t* tokens, int64_t num_tokens,
               __nv_bfloat16* out, cudaStream_t stream);

}  // namespace qf::cuda
