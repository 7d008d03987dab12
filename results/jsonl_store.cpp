#include "results/jsonl_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/check.h"
#include "common/json_io.h"
#include "common/json_reader.h"

namespace kvb {
namespace fs = std::filesystem;

JsonlStore::JsonlStore(std::string path) : path_(std::move(path)) {
  if (!fs::exists(path_)) return;
  KVB_INPUT_CHECK(fs::is_regular_file(path_), path_, ": not a regular file");
  const std::string text = read_file(path_);
  size_t start = 0, line = 0, complete = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    ++line;
    if (nl == std::string::npos) break;  // an unfinished write: dropped below
    std::string s = text.substr(start, nl - start);
    const std::string at = path_ + ":" + std::to_string(line) + ": ";
    if (s.find_first_not_of(" \t\r") != std::string::npos) {
      // The JSON layer: "<file>:<line>: not a result record: invalid JSON: ..." and its limits.
      nlohmann::json j = parse_json(s, at + "not a result record");
      KVB_INPUT_CHECK(j.is_object() && j.contains("key") && j["key"].is_string(), at,
                      "not a result record: expected an object with a string \"key\"");
      index_[j["key"].get<std::string>()] = records_.size();
      records_.push_back(std::move(j));
    }
    start = nl + 1;
    complete = start;
  }
  if (complete < text.size()) fs::resize_file(path_, complete);
}

void JsonlStore::write_cell(const nlohmann::json& record) {
  KVB_CHECK(record.is_object() && record.contains("key") && record["key"].is_string(),
            "a cell record needs a string \"key\"");
  const fs::path parent = fs::path(path_).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  const std::string line = record.dump() + "\n";
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  KVB_CHECK(fd >= 0, "cannot open ", path_, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw Error("write to " + path_ + " failed: " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  index_[record["key"].get<std::string>()] = records_.size();
  records_.push_back(record);
}

StoreOpener store_opener(const SuiteRunOptions& opt) {
  if (!opt.db_path.empty()) return open_sqlite_store;
  return open_result_store;
}

std::unique_ptr<ResultStore> open_result_store(const std::string& path) {
  return std::make_unique<JsonlStore>(path);
}

}  // namespace kvb
