// What every qforge benchmark (and its peers' harnesses in bench/peers) reports for one timed
// case: the median of the per-launch times, and their range; and the run's time stamp. Header-only plain C++17, so the
// harnesses built outside CMake include it too.
#pragma once

#include <algorithm>
#include <ctime>
#include <string>
#include <vector>

namespace qf::cuda {

struct Timing {
  double median_us = 0, min_us = 0, max_us = 0;
  int reps = 0;
};

// From per-launch times in microseconds (any order, at least one): the median (the mean of the
// middle two for an even count), the fastest and the slowest.
inline Timing timing_of(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  const size_t n = us.size();
  Timing t;
  t.reps = int(n);
  t.min_us = us.front();
  t.max_us = us.back();
  t.median_us = n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
  return t;
}

// Now, as the benchmarks' reports stamp their runs: "2026-11-23T19:44:05Z".
inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace qf::cuda
