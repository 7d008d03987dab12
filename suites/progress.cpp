#include "suites/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace kvb {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t % 3600 / 60));
  else if (t >= 60)
    std::snprintf(b, sizeof b, "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  else
    std::snprintf(b, sizeof b, "%llds", static_cast<long long>(t));
  return b;
}

Progress::Progress(int64_t total, std::FILE* out, int tty)
    : out_(out),
      tty_(tty < 0 ? ::isatty(::fileno(out)) != 0 : tty != 0),
      total_(total),
      t0_(std::chrono::steady_clock::now()),
      last_draw_(t0_) {}

std::string Progress::eta_text() const {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double ran = static_cast<double>(finished_) + frac_;  // cells computed in this run
  const double left = static_cast<double>(total_ - finished_ - skipped_) - frac_;
  char b[96];
  if (ran <= 0 || el <= 0) return "rate ?  ETA ?";
  const double rate = ran / el;  // cells per second
  if (rate * 60 >= 1)
    std::snprintf(b, sizeof b, "%.1f cells/min", rate * 60);
  else
    std::snprintf(b, sizeof b, "%.2f cells/h", rate * 3600);
  return std::string(b) + "  ETA " + format_duration(left / rate);
}

void Progress::draw(bool force) {
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
  last_draw_ = now;
  constexpr int kWidth = 28;
  const double done = static_cast<double>(finished_ + skipped_) + frac_;
  const int fill =
      total_ > 0 ? static_cast<int>(kWidth * done / static_cast<double>(total_)) : kWidth;
  std::string bar(static_cast<size_t>(std::clamp(fill, 0, kWidth)), '#');
  bar.resize(kWidth, '.');
  std::string label = label_.size() > 60 ? label_.substr(0, 57) + "..." : label_;
  std::fprintf(out_, "\r\033[K[%s] %lld/%lld  %s  %s", bar.c_str(),
               static_cast<long long>(finished_ + skipped_), static_cast<long long>(total_),
               eta_text().c_str(), label.c_str());
  std::fflush(out_);
  drawn_ = true;
}

void Progress::start_cell(const std::string& label) {
  label_ = label;
  frac_ = 0;
  draw(true);
}

void Progress::update(double f) {
  frac_ = std::clamp(f, 0.0, 1.0);
  draw(false);
}

void Progress::finish_cell(const std::string& line) {
  ++finished_;
  frac_ = 0;
  if (tty_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "[%lld/%lld] %s%s\n", static_cast<long long>(finished_ + skipped_),
               static_cast<long long>(total_), line.c_str(),
               tty_ ? "" : ("  (" + eta_text() + ")").c_str());
  std::fflush(out_);
  draw(true);
}

void Progress::skip_cell(const std::string& label) {
  ++skipped_;
  if (tty_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "[%lld/%lld] skip (finished earlier): %s\n",
               static_cast<long long>(finished_ + skipped_), static_cast<long long>(total_),
               label.c_str());
  std::fflush(out_);
  draw(true);
}

void Progress::done() {
  if (tty_ && drawn_) std::fprintf(out_, "\r\033[K");
  std::fflush(out_);
}

}  // namespace kvb
