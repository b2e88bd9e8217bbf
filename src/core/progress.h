// A progress line for long jobs (perplexity, calibration, quantization): done/total, rate and
// ETA. Redraws in place on a terminal; on a pipe or log file it prints a line every ~10%, so
// CI logs stay readable. Quiet mode (--quiet / QF_QUIET=1) prints nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qf {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();
  void advance(int64_t n = 1);
  void set_note(std::string note) { note_ = std::move(note); }  // e.g. "ppl 12.3"
  void finish();
  double elapsed_seconds() const;

  static void set_quiet(bool q);

 private:
  void draw(bool final);
  std::string label_, unit_, note_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int last_decile_ = -1;
  bool tty_, finished_ = false;
};

// "1h02m03s" / "4m05s" / "12.3s"
std::string format_duration(double seconds);

}  // namespace qf
