// The paths the results commands take on a database (fuzz_results_db and
// fuzz_results_db_fields): check_results_db, then one of these (each takes tens of
// milliseconds on a valid database, so an input takes the one its hash picks, always the same):
//   0  export's and compare's reads: ResultsDb, resolve_run, load_compare_cells, compare_cells
//   1  the leaderboard and report (render_leaderboard, all methods and two)
//   2  merge into a copy of the seed database (SqliteStore::merge)
//   3  opening for writing (SqliteStore: import-bench --run, run --db): a refused file must be
//      left byte for byte as it was
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "results/compare.h"
#include "results/leaderboard.h"
#include "results/results_db.h"
#include "results/sqlite_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvb::fuzz {

inline void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) remove_path(path + suffix);
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The committed seed database (a tiny run of the quick suite's kinds plus kernel timings).
inline std::string seed_db_path() { return source_path("tests/fuzz/data/results.db"); }

inline void exercise_results_db(const std::string& path, std::string_view input) {
  expect_input_errors([&] { (void)check_results_db(path); });
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : input) hash = (hash ^ c) * 1099511628211ull;
  const int mode = static_cast<int>(hash % 4);
  if (mode == 0) {
    expect_input_errors([&] {
      const ResultsDb db(path);
      (void)db.version();
      for (const auto& row : db.query("SELECT id FROM runs ORDER BY id LIMIT 3")) {
        const std::string id = db.resolve_run(row.at(0));
        const CompareCells cells = load_compare_cells(db, id, "");
        (void)compare_cells(cells, cells, 0.0);
        (void)load_compare_cells(db, id, "kivi(bits=2,group=16,residual=16)");
      }
    });
  } else if (mode == 1) {
    expect_input_errors([&] { (void)render_leaderboard({path, "", {}}); });
    expect_input_errors([&] {
      (void)render_leaderboard({path, "", {"full", "kivi(bits=2,group=16,residual=16)"}});
    });
  } else if (mode == 2) {
    const std::string out = scratch_path("merge-out.db");
    remove_db(out);
    copy_bytes(seed_db_path(), out);
    expect_input_errors([&] {
      SqliteStore store(out);
      (void)store.merge(path);
    });
  } else {
    const std::string before = read_all(path);
    const bool opened = expect_input_errors([&] {
      SqliteStore store(path);
      (void)store.cells();
    });
    if (!opened && read_all(path) != before) report("a refused database was changed", path);
  }
}

}  // namespace kvb::fuzz
