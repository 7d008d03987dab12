#include "datasets/text.h"

#include <algorithm>
#include <filesystem>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_io.h"

namespace kvb {
namespace fs = std::filesystem;

std::string normalize_newlines(const std::string& s) {
  std::string r;
  r.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      r += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      r += s[i];
    }
  }
  return r;
}

int64_t check_dataset_file_size(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  KVB_INPUT_CHECK(!ec, one_line(path), ": cannot open file");
  KVB_INPUT_CHECK(size <= static_cast<uintmax_t>(kMaxDatasetFileBytes), one_line(path), ": ", size,
                  " bytes, more than the ", kMaxDatasetFileBytes, " a dataset file may have");
  return static_cast<int64_t>(size);
}

std::string load_text_file(const std::string& path) {
  KVB_INPUT_CHECK(fs::is_regular_file(path), one_line(path),
                  ": cannot open file (not a regular file)");
  check_dataset_file_size(path);
  std::string t = normalize_newlines(read_file(path));
  KVB_INPUT_CHECK(!t.empty(), one_line(path), ": empty text file");
  return t;
}

std::string load_wikitext2(const std::string& path) { return load_text_file(path); }

namespace {
std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n"), b = s.find_last_not_of(" \t\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}
}  // namespace

std::string load_text_dir(const std::string& dir) {
  KVB_INPUT_CHECK(fs::is_directory(dir), one_line(dir), ": not a directory");
  std::vector<std::string> files;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  KVB_INPUT_CHECK(!ec, one_line(dir), ": cannot read the directory (", ec.message(), ")");
  for (const auto& e : it)
    if (e.is_regular_file(ec) && e.path().extension() == ".txt") {
      files.push_back(e.path().string());
      KVB_INPUT_CHECK(static_cast<int64_t>(files.size()) <= kMaxTextDirFiles, one_line(dir),
                      ": more than ", kMaxTextDirFiles, " .txt files");
    }
  std::sort(files.begin(), files.end());
  KVB_INPUT_CHECK(!files.empty(), one_line(dir), ": no .txt files in the directory");
  int64_t total = 0;
  for (const auto& f : files) total += check_dataset_file_size(f);
  KVB_INPUT_CHECK(total <= kMaxDatasetFileBytes, one_line(dir), ": its .txt files hold ", total,
                  " bytes, more than the ", kMaxDatasetFileBytes, " a dataset may read");
  std::string all;
  for (const auto& f : files) {
    std::string t = trim(normalize_newlines(read_file(f)));
    if (t.empty()) continue;
    if (!all.empty()) all += "\n\n";
    all += t;
  }
  KVB_INPUT_CHECK(!all.empty(), one_line(dir), ": every .txt file is empty");
  return all;
}

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    std::string t;
    bool space = false;
    for (char c : cur) {
      if (c == ' ' || c == '\t' || c == '\n') {
        space = !t.empty();
      } else {
        if (space) t += ' ';
        space = false;
        t += c;
      }
    }
    if (!t.empty()) out.push_back(t);
    cur.clear();
  };
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    char c = text[i];
    if (c == '\n' && i + 1 < n && text[i + 1] == '\n') {  // blank line: paragraph end
      flush();
      continue;
    }
    cur += c;
    if (c == '.' || c == '!' || c == '?') {
      size_t j = i + 1;
      while (j < n && (text[j] == '"' || text[j] == '\'' || text[j] == ')' || text[j] == ']'))
        cur += text[j++];
      if (j >= n || text[j] == ' ' || text[j] == '\n' || text[j] == '\t') {
        i = j - 1;
        flush();
      }
    }
  }
  flush();
  return out;
}

}  // namespace kvb
