#include "core/progress.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace qf {
namespace {
std::atomic<int> g_quiet{-1};
bool quiet() {
  if (g_quiet.load() < 0) {
    const char* e = std::getenv("QF_QUIET");
    g_quiet = (e && *e && std::strcmp(e, "0") != 0) ? 1 : 0;
  }
  return g_quiet.load() == 1;
}
}  // namespace

void Progress::set_quiet(bool q) { g_quiet = q ? 1 : 0; }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm%02ds", int(s) / 3600, int(s) / 60 % 60, int(s) % 60);
  }
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total),
      start_(std::chrono::steady_clock::now()), last_draw_(start_), tty_(isatty(STDERR_FILENO)) {}

Progress::~Progress() {
  if (!finished_ && done_ > 0 && tty_ && !quiet()) std::fputc('\n', stderr);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(int64_t n) {
  done_ += n;
  if (quiet()) return;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ > std::chrono::milliseconds(100) || done_ >= total_) {
      last_draw_ = now;
      draw(false);
    }
  } else if (total_ > 0) {
    int decile = static_cast<int>(10 * done_ / total_);
    if (decile != last_decile_ && done_ < total_) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!quiet()) draw(true);
}

void Progress::draw(bool final) {
  double el = elapsed_seconds();
  double rate = el > 0 ? done_ / el : 0;
  double frac = total_ > 0 ? std::min(1.0, double(done_) / total_) : 0;
  constexpr int kWidth = 24;
  std::string bar(kWidth, ' ');
  for (int i = 0; i < int(frac * kWidth + 0.5); ++i) bar[i] = '#';
  char line[512];
  std::string eta = final ? "done in " + format_duration(el)
                          : "ETA " + (rate > 0 ? format_duration((total_ - done_) / rate) : std::string("?"));
  std::snprintf(line, sizeof line, "%s [%s] %3d%% %lld/%lld %s, %.1f %s/s, %s%s%s", label_.c_str(), bar.c_str(),
                int(frac * 100), (long long)done_, (long long)total_, unit_.c_str(), rate, unit_.c_str(),
                eta.c_str(), note_.empty() ? "" : ", ", note_.c_str());
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line);
  }
  std::fflush(stderr);
}

}  // namespace qf
