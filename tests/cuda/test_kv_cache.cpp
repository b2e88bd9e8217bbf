// Paged KV cache: the host block manager (no GPU needed) and the append kernel (GPU), which
// must put every row exactly where the documented layout says and touch nothing else.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/kv_cache.h"
#include "core/error.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

using cuda::kKvBlockTokens;
using cuda::KvBlockManager;

TEST(KvBlockManager, GrowAllocatesWholeBlocksAndSlotsFollowTheTable) {
  KvBlockManager mgr(10, 3, 100);
  EXPECT_EQ(mgr.max_blocks_per_seq(), 7);  // ceil(100 / 16)
  mgr.grow(0, 17);                         // 2 blocks
  mgr.grow(1, 16);                         // 1 block
  mgr.grow(0, 33);                         // 3 blocks: its third block comes after seq 1's
  EXPECT_EQ(mgr.free_blocks(), 6);
  EXPECT_EQ(mgr.length(0), 33);
  const auto table = mgr.block_tables();
  ASSERT_EQ(table.size(), size_t(3 * 7));
  // Fresh manager: blocks handed out 0, 1, 2, ... in order of requests.
  EXPECT_EQ((std::vector<int32_t>(table.begin(), table.begin() + 4)), (std::vector<int32_t>{0, 1, 3, -1}));
  EXPECT_EQ(table[7], 2);
  EXPECT_EQ(table[8], -1);
  EXPECT_EQ(table[14], -1);  // sequence 2 holds nothing
  // Slot of position p = block(p / 16) * 16 + p % 16.
  const auto slots = mgr.slot_ids(0, 14, 19);
  for (int i = 0; i < 19; ++i) {
    const int p = 14 + i;
    EXPECT_EQ(slots[size_t(i)], table[size_t(p / kKvBlockTokens)] * kKvBlockTokens + p % kKvBlockTokens) << p;
  }
}

TEST(KvBlockManager, TruncateAndReleaseReturnBlocks) {
  KvBlockManager mgr(8, 2, 128);
  mgr.grow(0, 128);  // all 8 blocks
  EXPECT_EQ(mgr.free_blocks(), 0);
  EXPECT_THROW(mgr.grow(1, 1), Error);  // full
  mgr.truncate(0, 33);                  // keeps 3 blocks
  EXPECT_EQ(mgr.free_blocks(), 5);
  EXPECT_EQ(mgr.length(0), 33);
  mgr.grow(1, 80);  // 5 blocks, reusing those returned
  EXPECT_EQ(mgr.free_blocks(), 0);
  // No block is owned twice.
  const auto table = mgr.block_tables();
  std::set<int32_t> owned;
  for (int32_t b : table)
    if (b >= 0) {
      EXPECT_TRUE(owned.insert(b).second) << "block " << b << " owned twice";
    }
  EXPECT_EQ(owned.size(), size_t(8));
  mgr.release(0);
  mgr.release(1);
  EXPECT_EQ(mgr.free_blocks(), 8);
  EXPECT_EQ(mgr.length(1), 0);
}

TEST(KvBlockManager, RejectsBadRequestsWithoutChangingState) {
  KvBlockManager mgr(4, 2, 64);
  mgr.grow(0, 20);
  EXPECT_THROW(mgr.grow(0, 65), Error);      // past max_seq_len
  EXPECT_THROW(mgr.grow(0, 10), Error);      // shrinking is truncate's job
  EXPECT_THROW(mgr.truncate(0, 21), Error);  // past the length
  EXPECT_THROW(mgr.grow(2, 1), Error);       // no such sequence slot
  EXPECT_THROW(mgr.slot_ids(0, 10, 11), Error);  // positions 10..20, length 20
  mgr.grow(1, 32);                           // 2 blocks: 4 in use
  EXPECT_THROW(mgr.grow(1, 33), Error);      // one more block needed, none free
  EXPECT_EQ(mgr.length(1), 32);
  EXPECT_EQ(mgr.free_blocks(), 0);
  EXPECT_THROW(KvBlockManager(0, 1, 1), Error);
  EXPECT_THROW(KvBlockManager(int64_t(1) << 30, 1, 1), Error);  // slot ids overflow int32
}

// Appends tokens of several sequences (some padding slots of -1) from strided rows, then
// checks the whole pool: every appended row at its documented offset, everything else still
// poisoned.
void run_append(int kv_heads, int head_dim, uint64_t seed) {
  SCOPED_TRACE("kv_heads " + std::to_string(kv_heads) + " head_dim " + std::to_string(head_dim) + " seed " +
               std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  const int64_t num_blocks = 23;
  const int row = kv_heads * head_dim;
  const int64_t k_stride = row + 8, v_stride = 3 * row;  // e.g. inside a fused QKV output
  // Distinct random slots (some tokens of the batch are padding: -1).
  std::vector<int32_t> all(static_cast<size_t>(num_blocks * kKvBlockTokens));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  const int tokens = 100;
  std::vector<int32_t> slots(all.begin(), all.begin() + tokens);
  slots[3] = slots[50] = -1;
  const auto k = random_bf16(size_t(tokens) * k_stride, rng), v = random_bf16(size_t(tokens) * v_stride, rng);
  const size_t pool_elems = size_t(cuda::kv_pool_elements(num_blocks, kv_heads, head_dim));
  DeviceArray<bf16> kp(pool_elems), vp(pool_elems), dk(k, stream), dv(v, stream);
  DeviceArray<int32_t> ds(slots, stream);
  kp.poison(stream);
  vp.poison(stream);
  const cuda::KvLayerView layer{kp.get(), vp.get(), num_blocks, kv_heads, head_dim};
  cuda::kv_cache_append(dk.get(), k_stride, dv.get(), v_stride, ds.get(), tokens, layer, stream);
  const auto k_pool = kp.download(stream), v_pool = vp.download(stream);

  std::vector<bool> written(pool_elems, false);
  int64_t wrong = 0;
  for (int t = 0; t < tokens; ++t) {
    if (slots[size_t(t)] < 0) continue;
    const int64_t block = slots[size_t(t)] / kKvBlockTokens, in_block = slots[size_t(t)] % kKvBlockTokens;
    for (int h = 0; h < kv_heads; ++h)
      for (int d = 0; d < head_dim; ++d) {
        const size_t at = size_t(((block * kv_heads + h) * kKvBlockTokens + in_block) * head_dim + d);
        written[at] = true;
        wrong += bf16_bits(k_pool[at]) != bf16_bits(k[size_t(t * k_stride + h * head_dim + d)]);
        wrong += bf16_bits(v_pool[at]) != bf16_bits(v[size_t(t * v_stride + h * head_dim + d)]);
      }
  }
  EXPECT_EQ(wrong, 0) << "rows not where the layout says";
  int64_t stray = 0;
  for (size_t i = 0; i < pool_elems; ++i)
    if (!written[i]) stray += (bf16_bits(k_pool[i]) != kPoisonBits) + (bf16_bits(v_pool[i]) != kPoisonBits);
  EXPECT_EQ(stray, 0) << "elements outside the appended rows were written";
}

TEST(KvCacheAppend, PlacesRowsPerLayout) {
  QF_REQUIRE_GPU();
  run_append(8, 128, fresh_seed());   // Llama-3-8B
  run_append(32, 128, fresh_seed());  // Llama-2-7B
  run_append(3, 64, fresh_seed());    // SmolLM2-135M
}

TEST(KvCacheAppend, RejectsBadArguments) {
  // Checked on the host before any launch.
  auto* p = reinterpret_cast<bf16*>(256);
  const int32_t* slots = reinterpret_cast<const int32_t*>(256);
  cuda::KvLayerView layer{p, p, 4, 2, 60};
  EXPECT_THROW(cuda::kv_cache_append(p, 120, p, 120, slots, 1, layer, nullptr), Error);  // head_dim 60
  layer.head_dim = 64;
  EXPECT_THROW(cuda::kv_cache_append(p, 100, p, 128, slots, 1, layer, nullptr), Error);  // stride < row
  EXPECT_THROW(cuda::kv_cache_append(p + 1, 128, p, 128, slots, 1, layer, nullptr), Error);  // misaligned
}

}  // namespace
}  // namespace qf::testing
