// A results database file: the input is the .db file's bytes (the seeds hold valid databases
// made by `kvbench run --db` and `import-bench`, at schema versions 2 and 1; mutations give
// damaged pages, foreign schemas, wrong application ids and versions). Entry points:
// check_results_db, then compare's reads, the leaderboard, merge or opening for writing
// (results_fuzz_util.h).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/results_fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("in.db");
  remove_db(path);
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  exercise_results_db(path, {reinterpret_cast<const char*>(data), size});
  return 0;
}
