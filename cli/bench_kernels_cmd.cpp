#include "cli/bench_kernels_cmd.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/results_cmd.h"
#include "common/check.h"
#include "common/json_reader.h"
#include "results/bench_import.h"

extern char** environ;

namespace kvb::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct KernelSuite {
  std::string name = "kernels";
  std::string filter = kDefaultKernelFilter;
  int repetitions = 1;
  double min_time = 0;  // 0: Google Benchmark's default
  int threads = 0;
  json shapes = json::array();  // expanded: one object per shape, as kvbench_bench reads them
  json source = json::object();
};

// An integer or an array of integers, each in [lo, hi].
std::vector<int64_t> int_list(const JsonNode& n, int64_t lo, int64_t hi) {
  if (n.is_array()) {
    KVB_INPUT_CHECK(n.size() > 0, n.source(), ": ", n.where(), ": empty list");
    return n.integers(lo, hi);
  }
  return {n.integer(lo, hi)};
}

KernelSuite read_suite(const std::string& path) {
  KernelSuite s;
  const json doc = read_json_input(path);
  const JsonNode root(doc, path);
  root.object().only_keys({"name", "filter", "repetitions", "min_time", "threads", "shapes"});
  s.source = doc;
  s.name = root.str("name", s.name);
  KVB_INPUT_CHECK(!s.name.empty() && s.name.size() <= 200, path, ": name: 1 to 200 characters");
  s.filter = root.str("filter", s.filter);
  KVB_INPUT_CHECK(!s.filter.empty() && s.filter.size() <= 1000, path,
                  ": filter: 1 to 1000 characters");
  s.repetitions = root.int32("repetitions", 1, 1, 100);
  s.min_time = root.number("min_time", 0, 0, 60);
  s.threads = root.int32("threads", 0, 0, 1024);
  if (const auto shapes = root.find("shapes")) {
    shapes->array();
    KVB_INPUT_CHECK(shapes->size() > 0, path, ": shapes: empty list");
    for (const JsonNode& e : shapes->items()) {
      e.object().only_keys({"heads", "kv_heads", "head_dim", "context", "bits"});
      const int64_t heads = e.at("heads").integer(1, 256);
      const int64_t kv = e.at("kv_heads").integer(1, 256);
      if (kv > heads || heads % kv != 0)
        e.at("kv_heads").fail("KV heads (" + std::to_string(kv) + ") must divide heads (" +
                              std::to_string(heads) + ")");
      const int64_t d = e.at("head_dim").integer(1, 4096);
      if (d != 32 && d != 64 && d != 128 && d != 256)
        e.at("head_dim").fail("head dim " + std::to_string(d) + ": the kernels run 32, 64, 128 or 256");
      const std::vector<int64_t> ctxs = int_list(e.at("context"), 1, int64_t{1} << 20);
      const std::vector<int64_t> bits = int_list(e.at("bits"), 2, 4);
      for (int64_t b : bits)
        if (b != 2 && b != 4) e.at("bits").fail("bits " + std::to_string(b) + ": 2 or 4");
      for (int64_t c : ctxs)
        for (int64_t b : bits)
          s.shapes.push_back(
              {{"heads", heads}, {"kv_heads", kv}, {"head_dim", d}, {"context", c}, {"bits", b}});
    }
    KVB_INPUT_CHECK(s.shapes.size() <= 1000, path, ": shapes: ", s.shapes.size(),
                    " shapes (at most 1000)");
  }
  return s;
}

fs::path default_bench_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("kvbench_bench") : self.parent_path() / "kvbench_bench";
}

// A file in the temporary folder, removed when this goes out of scope.
struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& tag) {
    static int n = 0;
    path = fs::temp_directory_path() /
           ("kvbench-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(n++));
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

// Runs argv with `env_add` added to the environment, stdout and stderr inherited; its exit code.
int spawn_wait(const std::vector<std::string>& argv, const std::vector<std::string>& env_add) {
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    bool replaced = false;
    for (const std::string& a : env_add)
      if (std::strncmp(*e, a.c_str(), a.find('=') + 1) == 0) replaced = true;
    if (!replaced) env_s.emplace_back(*e);
  }
  env_s.insert(env_s.end(), env_add.begin(), env_add.end());
  std::vector<char*> av, ev;
  for (const std::string& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  for (const std::string& e : env_s) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), nullptr, nullptr, av.data(), ev.data());
  KVB_CHECK(rc == 0, argv[0], ": cannot be started (", std::strerror(rc), ")");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    KVB_CHECK(errno == EINTR, argv[0], ": waitpid failed (", std::strerror(errno), ")");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

int run_bench_kernels(const BenchKernelsArgs& a) {
  // Everything the user gave is checked before anything runs.
  KernelSuite suite;
  if (!a.suite.empty()) suite = read_suite(a.suite);
  const fs::path bench = a.bench.empty() ? default_bench_binary() : fs::path(a.bench);
  std::error_code ec;
  KVB_INPUT_CHECK(fs::is_regular_file(bench, ec) && access(bench.c_str(), X_OK) == 0,
                  bench.string(), ": no benchmark binary there (build kvbench_bench, or pass --bench)");
  const fs::path db_dir = fs::path(a.db).has_parent_path() ? fs::path(a.db).parent_path() : ".";
  KVB_INPUT_CHECK(fs::is_directory(db_dir, ec), a.db, ": no folder ", db_dir.string());

  TempFile shapes_file("shapes"), out_file("bench");
  std::vector<std::string> argv = {bench.string(), "--benchmark_filter=" + suite.filter,
                                   "--benchmark_out=" + out_file.path.string(),
                                   "--benchmark_out_format=json",
                                   "--benchmark_repetitions=" + std::to_string(suite.repetitions)};
  if (suite.min_time > 0) argv.push_back("--benchmark_min_time=" + std::to_string(suite.min_time));
  if (!suite.shapes.empty()) {
    std::ofstream(shapes_file.path) << json{{"shapes", suite.shapes}}.dump() << "\n";
    argv.push_back("--kvb_shapes=" + shapes_file.path.string());
  }
  std::vector<std::string> env;
  // Every benchmark on the same threads: the suite's, or every hardware thread (libtorch 1.13
  // may start with one on machines whose cores it cannot identify).
  const unsigned hw = std::thread::hardware_concurrency();
  const int threads = suite.threads > 0 ? suite.threads : static_cast<int>(hw > 0 ? hw : 1);
  env.push_back("KVB_BENCH_THREADS=" + std::to_string(threads));
  const int rc = spawn_wait(argv, env);
  KVB_CHECK(rc == 0, bench.string(), " exited with status ", rc, "; nothing was recorded");
  KVB_CHECK(fs::exists(out_file.path), bench.string(), " wrote no results (did the filter '",
            suite.filter, "' match no benchmark?); nothing was recorded");

  const BenchImport b = read_benchmark_json(out_file.path.string());
  json config = {{"suite", suite.source},
                 {"filter", suite.filter},
                 {"shapes", suite.shapes},
                 {"context", b.context}};
  const int64_t run_id = file_bench_import(a.db, b, "", suite.name, config);
  std::cout << a.db << ": " << b.timings.size() << " kernel timings in run " << run_id;
  if (b.skipped) std::cout << " (" << b.skipped << " benchmarks skipped with errors)";
  std::cout << "\n";
  return 0;
}

}  // namespace kvb::cli
