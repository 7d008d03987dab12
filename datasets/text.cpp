#include "datasets/text.h"

#include <algorithm>
#include <filesystem>

#include "common/check.h"
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

std::string load_text_file(const std::string& path) {
  KVB_INPUT_CHECK(fs::is_regular_file(path), path, ": cannot open file (not a regular file)");
  std::string t = normalize_newlines(read_file(path));
  KVB_INPUT_CHECK(!t.empty(), path, ": empty text file");
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
  KVB_INPUT_CHECK(fs::is_directory(dir), dir, ": not a directory");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  KVB_INPUT_CHECK(!files.empty(), dir, ": no .txt files in the directory");
  std::string all;
  for (const auto& f : files) {
    std::string t = trim(normalize_newlines(read_file(f)));
    if (t.empty()) continue;
    if (!all.empty()) all += "\n\n";
    all += t;
  }
  KVB_INPUT_CHECK(!all.empty(), dir, ": every .txt file is empty");
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
