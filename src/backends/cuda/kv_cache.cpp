// Host-side book-keeping of the paged KV cache (see kv_cache.h).
#include "backends/cuda/kv_cache.h"

#include <limits>

#include "core/error.h"

namespace qf::cuda {

KvBlockManager::KvBlockManager(int64_t num_blocks, int max_seqs, int max_seq_len)
    : num_blocks_(num_blocks), max_seqs_(max_seqs), max_seq_len_(max_seq_len) {
  QF_CHECK(num_blocks > 0, "KV cache: number of blocks must be positive, got ", num_blocks);
  // Slot ids (block * kKvBlockTokens + slot) and block ids are int32 on the device.
  QF_CHECK(num_blocks <= std::numeric_limits<int32_t>::max() / kKvBlockTokens,
           "KV cache: ", num_blocks, " blocks exceed the int32 slot-id range");
  QF_CHECK(max_seqs > 0, "KV cache: max_seqs must be positive, got ", max_seqs);
  QF_CHECK(max_seq_len > 0, "KV cache: max_seq_len must be positive, got ", max_seq_len);
  max_blocks_per_seq_ = (max_seq_len + kKvBlockTokens - 1) / kKvBlockTokens;
  free_.reserve(static_cast<size_t>(num_blocks));
  // Pushed in reverse so that a fresh manager hands out blocks 0, 1, 2, ...
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  blocks_.resize(static_cast<size_t>(max_seqs));
  lengths_.assign(static_cast<size_t>(max_seqs), 0);
}

void KvBlockManager::check_seq(int seq) const {
  QF_CHECK(seq >= 0 && seq < max_seqs_, "KV cache: sequence slot ", seq, " out of range [0, ",
           max_seqs_, ")");
}

int KvBlockManager::length(int seq) const {
  check_seq(seq);
  return lengths_[static_cast<size_t>(seq)];
}

void KvBlockManager::grow(int seq, int new_length) {
  check_seq(seq);
  auto& blocks = blocks_[static_cast<size_t>(seq)];
  int& len = lengths_[static_cast<size_t>(seq)];
  QF_CHECK(new_length >= len, "KV cache: grow of sequence ", seq, " to ", new_length,
           " tokens, below its length ", len, " (use truncate)");
  QF_CHECK(new_length <= max_seq_len_, "KV cache: sequence ", seq, " would hold ", new_length,
           " tokens, more than the cache's maximum of ", max_seq_len_);
  const size_t needed = static_cast<size_t>((new_length + kKvBlockTokens - 1) / kKvBlockTokens);
  if (needed > blocks.size()) {
    const size_t extra = needed - blocks.size();
    QF_CHECK(extra <= free_.size(), "KV cache full: sequence ", seq, " needs ", extra,
             " more blocks of ", kKvBlockTokens, " tokens, ", free_.size(), " of ", num_blocks_,
             " are free");
    for (size_t i = 0; i < extra; ++i) {
      blocks.push_back(free_.back());
      free_.pop_back();
    }
  }
  len = new_length;
}

void KvBlockManager::truncate(int seq, int new_length) {
  check_seq(seq);
  auto& blocks = blocks_[static_cast<size_t>(seq)];
  int& len = lengths_[static_cast<size_t>(seq)];
  QF_CHECK(new_length >= 0 && new_length <= len, "KV cache: truncate of sequence ", seq, " to ",
           new_length, " tokens, outside [0, ", len, "]");
  const size_t keep = static_cast<size_t>((new_length + kKvBlockTokens - 1) / kKvBlockTokens);
  while (blocks.size() > keep) {
    free_.push_back(blocks.back());
    blocks.pop_back();
  }
  len = new_length;
}

std::vector<int32_t> KvBlockManager::slot_ids(int seq, int first, int count) const {
  check_seq(seq);
  const auto& blocks = blocks_[static_cast<size_t>(seq)];
  const int len = lengths_[static_cast<size_t>(seq)];
  QF_CHECK(first >= 0 && count >= 0 && first + count <= len, "KV cache: slots [", first, ", ",
           first + count, ") of sequence ", seq, " outside its ", len, " tokens");
  std::vector<int32_t> slots(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const int pos = first + i;
    slots[static_cast<size_t>(i)] =
        blocks[static_cast<size_t>(pos / kKvBlockTokens)] * kKvBlockTokens + pos % kKvBlockTokens;
  }
  return slots;
}

std::vector<int32_t> KvBlockManager::block_tables() const {
  std::vector<int32_t> table(static_cast<size_t>(max_seqs_) * static_cast<size_t>(max_blocks_per_seq_), -1);
  for (size_t s = 0; s < blocks_.size(); ++s)
    for (size_t b = 0; b < blocks_[s].size(); ++b)
      table[s * static_cast<size_t>(max_blocks_per_seq_) + b] = blocks_[s][b];
  return table;
}

}  // namespace qf::cuda
