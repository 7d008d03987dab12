// `kvbench import-bench`: Google Benchmark JSON filed as kernel_timings rows (times in ms, counters
// mapped to their columns, a run of its own or an existing one), idempotent; `kvbench export
// --table kernel_timings` lists them; bad input is refused with one line, exit 2, nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/json_io.h"
#include "tests/results_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;
using test::q;
using test::scalar;
using test::scalar_text;

// What `kvbench_bench --benchmark_format=json` writes: a single run in us, a run of 3 repetitions
// in s with its aggregates, a manual-time CUDA run in ns, a run reported as aggregates only, and
// one that skipped with an error.
json bench_json() {
  json ctx = {{"date", "2024-06-01T10:00:00+00:00"},
              {"host_name", "benchhost"},
              {"executable", "./build/kvbench_bench"},
              {"num_cpus", 16},
              {"mhz_per_cpu", 3000},
              {"cpu_scaling_enabled", false},
              {"caches", json::array({{{"type", "Data"}, {"level", 1}, {"size", 49152},
                                       {"num_sharing", 2}}})},
              {"load_avg", {0.5, 0.4, 0.3}},
              {"library_build_type", "release"}};
  json b = json::array();
  b.push_back({{"name", "BM_DequantRows/8/64"}, {"family_index", 0},
               {"per_family_instance_index", 0}, {"run_name", "BM_DequantRows/8/64"},
               {"run_type", "iteration"}, {"repetitions", 1}, {"repetition_index", 0},
               {"threads", 1}, {"iterations", 5000}, {"real_time", 12.5}, {"cpu_time", 12.4},
               {"time_unit", "us"}, {"out_GB/s", 42.5}});
  const double secs[] = {1.5, 1.2, 1.8}, gf[] = {100, 90, 110}, frac[] = {0.5, 0.45, 0.55};
  for (int i = 0; i < 3; ++i)
    b.push_back({{"name", "BM_Prefill/2048/512"}, {"family_index", 1},
                 {"per_family_instance_index", 0}, {"run_name", "BM_Prefill/2048/512"},
                 {"run_type", "iteration"}, {"repetitions", 3}, {"repetition_index", i},
                 {"threads", 1}, {"iterations", 2}, {"real_time", secs[i]},
                 {"cpu_time", secs[i] * 3}, {"time_unit", "s"}, {"GFLOP/s", gf[i]},
                 {"frac_of_gemm", frac[i]}, {"gemm_GFLOP/s", 200.0}, {"tok/s", 1400.0}});
  for (const auto& [agg, t, g, f] : {std::tuple{"mean", 1.5, 100.0, 0.5},
                                     std::tuple{"median", 1.5, 100.0, 0.5},
                                     std::tuple{"stddev", 0.3, 10.0, 0.05},
                                     std::tuple{"cv", 0.2, 0.1, 0.1}})
    b.push_back({{"name", std::string("BM_Prefill/2048/512_") + agg}, {"family_index", 1},
                 {"per_family_instance_index", 0}, {"run_name", "BM_Prefill/2048/512"},
                 {"run_type", "aggregate"}, {"repetitions", 3}, {"threads", 1},
                 {"aggregate_name", agg},
                 {"aggregate_unit", std::string(agg) == "cv" ? "percentage" : "time"},
                 {"iterations", 3}, {"real_time", t}, {"cpu_time", t * 3}, {"time_unit", "s"},
                 {"GFLOP/s", g}, {"frac_of_gemm", f}, {"gemm_GFLOP/s", 200.0}});
  b.push_back({{"name", "BM_CudaDequantRows/4/manual_time"}, {"family_index", 2},
               {"per_family_instance_index", 0}, {"run_name", "BM_CudaDequantRows/4/manual_time"},
               {"run_type", "iteration"}, {"repetitions", 1}, {"repetition_index", 0},
               {"threads", 1}, {"iterations", 800}, {"real_time", 250000.0},
               {"cpu_time", 260000.0}, {"time_unit", "ns"}, {"GB/s", 800.0},
               {"copy_GB/s", 900.0}, {"frac_of_copy_bw", 0.89}, {"bytes_moved", 1048576}});
  for (const auto& [agg, t] : {std::pair{"mean", 7.5}, std::pair{"median", 7.0},
                               std::pair{"stddev", 0.5}})
    b.push_back({{"name", std::string("BM_Methods/4096_") + agg}, {"family_index", 3},
                 {"per_family_instance_index", 0}, {"run_name", "BM_Methods/4096"},
                 {"run_type", "aggregate"}, {"repetitions", 5}, {"threads", 1},
                 {"aggregate_name", agg}, {"aggregate_unit", "time"}, {"iterations", 5},
                 {"real_time", t}, {"cpu_time", t}, {"time_unit", "ms"}, {"tok/s", 900.0},
                 {"label", "kivi(bits=2)"}});
  b.push_back({{"name", "BM_Skipped"}, {"family_index", 4}, {"per_family_instance_index", 0},
               {"run_name", "BM_Skipped"}, {"run_type", "iteration"}, {"repetitions", 1},
               {"repetition_index", 0}, {"threads", 1}, {"iterations", 0},
               {"real_time", 0.0}, {"cpu_time", 0.0}, {"time_unit", "ns"},
               {"error_occurred", true}, {"error_message", "no CUDA device"}});
  return {{"context", ctx}, {"benchmarks", b}};
}

class BenchImport : public ::testing::Test {
 protected:
  void SetUp() override { write_file(bench(), bench_json().dump(2)); }
  std::string db() const { return dir_.path("r.db"); }
  std::string bench() const { return dir_.path("bench.json"); }
  test::CmdResult import(const std::string& db, const std::string& file,
                         const std::string& extra = "") {
    return test::run_kvbench("import-bench --db " + q(db) + " --json " + q(file) + extra);
  }
  // The number of kernel_timings rows with name `name` matching `cond`.
  int64_t rows(const std::string& name, const std::string& cond) const {
    return scalar(db(), "SELECT count(*) FROM kernel_timings WHERE name = '" + name + "' AND " +
                            cond);
  }
  std::string row(const std::string& name) const {  // for failure messages
    return scalar_text(db(),
                       "SELECT json_group_array(json_array(shape, device, reps, median_ms, min_ms, "
                       "max_ms, bytes_moved, gbps, gflops, roofline_fraction)) FROM "
                       "kernel_timings WHERE name = '" +
                           name + "'");
  }
  test::TempDir dir_;
};

TEST_F(BenchImport, FilesEachBenchmarkAsAKernelTimingOfItsOwnRun) {
  auto r = import(db(), bench());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4 kernel timings"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 benchmarks with errors skipped"), std::string::npos) << r.out;
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(scalar(db(),
                   "SELECT count(*) FROM runs WHERE suite_name = 'bench' AND host = 'benchhost' "
                   "AND started_at = '2024-06-01T10:00:00+00:00' AND ended_at IS NOT NULL AND "
                   "device = 'cuda' AND torch_version <> '' AND compiler <> '' AND threads > 0 "
                   "AND json_extract(config, '$.num_cpus') = 16 AND "
                   "json_extract(config, '$.library_build_type') = 'release'"),
            1);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 4);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings WHERE cell_key <> ''"), 0);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM cells"), 0);

  // One iteration entry in us: median = min = max, the counter "out_GB/s" as gbps.
  EXPECT_EQ(rows("BM_DequantRows/8/64",
                 "shape = '8/64' AND device = 'cpu' AND reps = 1 AND "
                 "abs(median_ms - 0.0125) < 1e-12 AND min_ms = median_ms AND max_ms = median_ms "
                 "AND abs(gbps - 42.5) < 1e-9 AND gflops IS NULL AND roofline_fraction IS NULL "
                 "AND bytes_moved IS NULL"),
            1)
      << row("BM_DequantRows/8/64");
  // Three repetitions in s: over the repetitions; counters of the median aggregate, "GFLOP/s"
  // (not "gemm_GFLOP/s") as gflops, "frac_of_gemm" as the roofline fraction.
  EXPECT_EQ(rows("BM_Prefill/2048/512",
                 "shape = '2048/512' AND device = 'cpu' AND reps = 3 AND "
                 "abs(median_ms - 1500) < 1e-9 AND abs(min_ms - 1200) < 1e-9 AND "
                 "abs(max_ms - 1800) < 1e-9 AND abs(gflops - 100) < 1e-9 AND "
                 "abs(roofline_fraction - 0.5) < 1e-12 AND gbps IS NULL"),
            1)
      << row("BM_Prefill/2048/512");
  // ns; CUDA from the name; the exact "GB/s" over "copy_GB/s"; bytes moved.
  EXPECT_EQ(rows("BM_CudaDequantRows/4/manual_time",
                 "shape = '4/manual_time' AND device = 'cuda' AND reps = 1 AND "
                 "abs(median_ms - 0.25) < 1e-12 AND abs(gbps - 800) < 1e-9 AND "
                 "abs(roofline_fraction - 0.89) < 1e-12 AND bytes_moved = 1048576 AND "
                 "gflops IS NULL"),
            1)
      << row("BM_CudaDequantRows/4/manual_time");
  // Aggregates only: the median aggregate; the label is the shape; no mapped counters.
  EXPECT_EQ(rows("BM_Methods/4096",
                 "shape = 'kivi(bits=2)' AND device = 'cpu' AND reps = 5 AND "
                 "abs(median_ms - 7) < 1e-12 AND min_ms = median_ms AND max_ms = median_ms AND "
                 "gbps IS NULL AND gflops IS NULL AND roofline_fraction IS NULL"),
            1)
      << row("BM_Methods/4096");
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings WHERE name LIKE 'BM_Skipped%'"), 0);

  // The same file again: the same run, its rows replaced.
  r = import(db(), bench());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 1);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 4);

  // export --table kernel_timings lists them; the default table is still the metrics.
  r = test::run_kvbench("export --db " + q(db()) + " --format csv --table kernel_timings");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::count_lines(r.out), 5) << r.out;
  EXPECT_EQ(r.out.rfind("run_id,run_name,cell_key,name,shape,device,reps,median_ms,min_ms,"
                        "max_ms,bytes_moved,gbps,gflops,roofline_fraction\n",
                        0),
            0u)
      << r.out;
  EXPECT_NE(r.out.find("1,,,BM_Prefill/2048/512,2048/512,cpu,3,1500.0,1200.0,1800.0,,,100.0,0.5"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(",kivi(bits=2),cpu,5,7.0,7.0,7.0,,,,"), std::string::npos) << r.out;
  r = test::run_kvbench("export --db " + q(db()) + " --format csv --run 1 --table kernel_timings");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::count_lines(r.out), 5) << r.out;
  r = test::run_kvbench("export --db " + q(db()) + " --format csv");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "run_id,run_name,suite,model,method,dataset,metric,value,se\n");
  r = test::run_kvbench("export --db " + q(db()) + " --format csv --table memory");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::count_lines(r.out), 1) << r.out;
  r = test::run_kvbench("export --db " + q(db()) + " --format jsonl --table kernel_timings");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
}

TEST_F(BenchImport, AttachesToAnExistingRun) {
  ASSERT_EQ(import(db(), bench()).code, 0);
  json other = bench_json();
  other["context"]["date"] = "2024-06-02T10:00:00+00:00";
  other["benchmarks"][0]["real_time"] = 25.0;
  write_file(dir_.path("other.json"), other.dump());
  // Another context is another run of its own ...
  auto r = import(db(), dir_.path("other.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 2);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 8);
  // ... unless --run names one: its rows are replaced.
  r = import(db(), dir_.path("other.json"), " --run 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("in run 1"), std::string::npos) << r.out;
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM runs"), 2);
  EXPECT_EQ(scalar(db(), "SELECT count(*) FROM kernel_timings"), 8);
  EXPECT_EQ(rows("BM_DequantRows/8/64", "run_id = 1 AND abs(median_ms - 0.025) < 1e-12"), 1)
      << row("BM_DequantRows/8/64");
  test::expect_refused("import-bench --db " + q(db()) + " --json " + q(bench()) + " --run nosuch",
                       db(), "no run 'nosuch'");
}

TEST_F(BenchImport, BadInputIsRefusedWithNothingWritten) {
  ASSERT_EQ(import(db(), bench()).code, 0);
  const std::string before = test::slurp(db());
  const std::string fresh = dir_.path("fresh.db");
  auto refused = [&](const std::string& file, const std::string& problem) {
    test::expect_refused("import-bench --db " + q(db()) + " --json " + q(file), file, problem);
    EXPECT_EQ(test::slurp(db()), before);
    test::expect_refused("import-bench --db " + q(fresh) + " --json " + q(file), file, problem);
    EXPECT_FALSE(std::filesystem::exists(fresh));
  };
  refused(dir_.path("missing.json"), "no such file");
  write_file(dir_.path("text.json"), "BM_DequantRows/8/64  12.5 us\n");
  refused(dir_.path("text.json"), "invalid JSON");
  write_file(dir_.path("nobench.json"), json{{"context", bench_json()["context"]}}.dump());
  refused(dir_.path("nobench.json"), "no \"benchmarks\" array");
  json j = bench_json();
  j["benchmarks"][2].erase("name");
  write_file(dir_.path("noname.json"), j.dump());
  refused(dir_.path("noname.json"), "benchmarks[2].name: missing");
  j = bench_json();
  j["benchmarks"][1].erase("real_time");
  write_file(dir_.path("notime.json"), j.dump());
  refused(dir_.path("notime.json"), "benchmarks[1].real_time: missing");

  for (const auto& b : test::bad_databases(dir_, db()))
    test::expect_refused("import-bench --db " + q(b.path) + " --json " + q(bench()), b.path,
                         b.problem);
}

}  // namespace
}  // namespace kvb
