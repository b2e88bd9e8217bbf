// A fixed pool of worker threads for data-parallel CPU loops. One process-wide pool, sized by
// QF_THREADS or the number of hardware threads, so nested libraries do not oversubscribe cores.
#pragma once

#include <cstdint>
#include <functional>

namespace qf {

// Threads the pool runs (>= 1).
int num_threads();
// Resize the pool (0: QF_THREADS or hardware concurrency). Not safe while a loop is running.
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint sub-ranges that cover [0, n), at least `grain` items each,
// spread over the pool; returns when all are done. Exceptions thrown by fn are rethrown here
// (the first one). Nested calls from inside fn run serially in the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace qf
