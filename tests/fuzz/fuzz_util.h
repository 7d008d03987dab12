// Shared by the libFuzzer targets in tests/fuzz (README.md there): a per-process scratch
// directory, writing inputs to files, splitting one input into several files, and the one rule
// every target checks: bad input may only end in kvb::InputError with a one-line message.
#pragma once

#include <cxxabi.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "common/check.h"
#include "common/error_text.h"

namespace kvb::fuzz {

// A directory of this process's own (/dev/shm when there is one: the targets write every
// input to a file), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path base =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    const fs::path d = base / ("kvb-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    static const std::string keep = d.string();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return d.string();
  }();
  return dir;
}

inline std::string scratch_path(const std::string& rel) { return scratch_dir() + "/" + rel; }

inline void write_bytes(const std::string& path, std::string_view bytes) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A copy that survives signals: libFuzzer's timer signal (SIGALRM, no SA_RESTART) interrupts
// std::filesystem::copy_file's sendfile, which then throws "Interrupted system call" (seen in a
// one-hour fuzz_results_db_fields run on a loaded machine); iostreams retry on EINTR.
inline void copy_bytes(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    std::fprintf(stderr, "fuzz harness: cannot read %s\n", from.c_str());
    std::abort();
  }
  write_bytes(to, bytes);
}

inline void remove_path(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

// The repository's own files (seed data the targets need at run time).
inline std::string source_path(const std::string& rel) {
  return std::string(KVB_SOURCE_DIR) + "/" + rel;
}

// An input holding several files: the parts between "\n#---\n" lines, at most `max_parts` (the
// last part keeps any further separators). A JSON text cannot contain the separator outside a
// string, so a seed is still one valid document per part.
inline std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts) {
  static constexpr std::string_view kSep = "\n#---\n";
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kSep);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kSep.size());
  }
  parts.push_back(input);
  return parts;
}

// Runs `f` with the scratch directory as the working directory (suite configs name models and
// files relative to it), then returns to the directory libFuzzer started in (it reads the
// corpus and writes new units relative to that).
template <typename F>
void in_scratch_dir(F&& f) {
  static const std::string home = std::filesystem::current_path().string();
  std::filesystem::current_path(scratch_dir());
  f();
  std::filesystem::current_path(home);
}

// Called from LLVMFuzzerInitialize by targets that change directory: crash artifacts go to the
// directory the fuzzer started in (as without a chdir), not into the scratch directory, unless
// -artifact_prefix or -exact_artifact_path is given. libFuzzer parses flags after
// LLVMFuzzerInitialize, so the added flag counts.
inline void keep_artifacts_in_start_dir(int* argc, char*** argv) {
  for (int i = 1; i < *argc; ++i) {
    const std::string_view a = (*argv)[i];
    if (a.starts_with("-artifact_prefix=") || a.starts_with("-exact_artifact_path=")) return;
  }
  static std::vector<char*> args((*argv), (*argv) + *argc);
  static std::string flag = "-artifact_prefix=" + std::filesystem::current_path().string() + "/";
  args.insert(args.begin() + 1, flag.data());
  args.push_back(nullptr);
  *argc = static_cast<int>(args.size()) - 1;
  *argv = args.data();
}

[[noreturn]] inline void report(const char* what, const std::string& message) {
  std::fprintf(stderr, "\nkvb-fuzz: %s: %s\n", what, one_line(message, 4000).c_str());
  std::abort();
}

// The message as the CLI prints it (cli/main.cpp: one_line) must be one non-empty line.
// KVB_FUZZ_VERBOSE=1 prints each one (to see which seeds a parser refuses, and why).
inline void check_input_error(const InputError& e) {
  static const bool verbose = std::getenv("KVB_FUZZ_VERBOSE") != nullptr;
  const std::string raw = e.what();
  if (verbose) std::fprintf(stderr, "kvb-fuzz: InputError: %s\n", one_line(raw).c_str());
  if (raw.empty()) report("InputError with an empty message", raw);
  const std::string line = one_line(raw);
  if (line.empty() || line.find_first_of("\n\r") != std::string::npos)
    report("InputError message not one line after one_line()", raw);
}

// Runs `f`; an InputError is the expected outcome of bad input; anything else escaping (another
// kvb::Error, nlohmann's exceptions, std::out_of_range, bad_alloc...) is a finding: abort() so
// that libFuzzer saves the input.
template <typename F>
bool expect_input_errors(F&& f) {
  try {
    f();
    return true;
  } catch (const InputError& e) {
    check_input_error(e);
    return false;
  } catch (const std::exception& e) {
    int status = 0;
    char* name = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
    const std::string type = status == 0 && name ? name : typeid(e).name();
    std::free(name);
    report(("uncaught " + type).c_str(), e.what());
  } catch (...) {
    report("uncaught non-std exception", "");
  }
}

}  // namespace kvb::fuzz
