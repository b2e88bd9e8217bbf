#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qf {

TEST(ThreadPool, CoversRangeExactlyOnce) {
  for (int threads : {1, 2, 5}) {
    set_num_threads(threads);
    for (int64_t n : {1, 7, 1000, 4097}) {
      std::vector<std::atomic<int>> hits(n);
      parallel_for(n, 3, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
  set_num_threads(0);
}

TEST(ThreadPool, RethrowsWorkerException) {
  set_num_threads(3);
  EXPECT_THROW(parallel_for(100, 1, [](int64_t b, int64_t) { if (b > 50) throw Error("boom"); }), Error);
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  parallel_for(100, 1, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
  EXPECT_EQ(sum.load(), 4950);
  set_num_threads(0);
}

TEST(ThreadPool, NestedLoopsRunSerially) {
  std::atomic<int64_t> count{0};
  parallel_for(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) parallel_for(10, 1, [&](int64_t b2, int64_t e2) { count += e2 - b2; });
  });
  EXPECT_EQ(count.load(), 80);
}

}  // namespace qf
