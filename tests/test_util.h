// Helpers shared by the tests: temp dirs, running the kvbench binary, shared-data lookup.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <sys/wait.h>

namespace kvb::test {

inline std::string shared_dir() { return KVB_SHARED_DIR; }
inline bool shared_has(const std::string& rel) {
  return std::filesystem::exists(std::filesystem::path(shared_dir()) / rel);
}
inline std::string shared_path(const std::string& rel) {
  return (std::filesystem::path(shared_dir()) / rel).string();
}
// A file of the repository itself (committed models, configs, test data).
inline std::string source_path(const std::string& rel) {
  return (std::filesystem::path(KVB_SOURCE_DIR) / rel).string();
}

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("kvb-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path(const std::string& rel = "") const { return (path_ / rel).string(); }

 private:
  std::filesystem::path path_;
};

struct CmdResult {
  int code = -1;
  std::string out, err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `args` (already shell-quoted) with the kvbench binary; captures stdout and stderr.
inline CmdResult run_kvbench(const std::string& args) {
  TempDir tmp;
  std::string cmd = std::string("'") + KVB_BINARY + "' " + args + " >'" + tmp.path("out") + "' 2>'" +
                    tmp.path("err") + "' </dev/null";
  int st = std::system(cmd.c_str());
  CmdResult r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(tmp.path("out"));
  r.err = slurp(tmp.path("err"));
  return r;
}

inline std::string q(const std::string& s) {  // single-quote for the shell
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

}  // namespace kvb::test
