// Row gather on the GPU: dst[i, :] = src[rows[i], :], BF16, for the runtime's LM head, which runs
// only on the rows whose logits a batch wants (the last token of each prompt at prefill).
// dim must be a multiple of 8 (16-byte vectors); pointers 16-byte aligned. rows is a device
// array whose entries the caller has checked (< the source's row count).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

void gather_rows(const __nv_bfloat16* src, int64_t dim, const int32_t* rows, int64_t num_rows, __nv_bfloat16* dst,
                 cudaStream_t stream);

}  // namespace qf::cuda
