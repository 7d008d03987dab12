// Progress of a suite run. On a terminal: a live bar redrawn in place (items done, rate, ETA,
// the cell in flight) with finished cells printed above it. Otherwise: one plain line per
// finished or skipped cell.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kvb {

class Progress {
 public:
  // `tty`: -1 = detect with isatty(out).
  Progress(int64_t total_cells, std::FILE* out, int tty = -1);
  void start_cell(const std::string& label);
  void update(double fraction);               // of the cell in flight, in [0, 1]
  void finish_cell(const std::string& line);  // the cell's one-line summary
  void skip_cell(const std::string& label);   // finished in an earlier run
  void done();                                // final newline for the bar
  bool is_tty() const { return tty_; }

 private:
  void draw(bool force);
  std::string eta_text() const;
  std::FILE* out_;
  bool tty_;
  int64_t total_, finished_ = 0, skipped_ = 0;
  double frac_ = 0;
  std::string label_;
  std::chrono::steady_clock::time_point t0_, last_draw_;
  bool drawn_ = false;
};

// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);

}  // namespace kvb
