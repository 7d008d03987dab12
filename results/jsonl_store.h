// ResultStore as JSON Lines: one record per line, appended and fsync'ed per cell.
//
// Opening reads every complete line. A last line without its newline is what a run killed in
// the middle of a write leaves: it is cut off (the cell was not finished and will run again).
// Any complete line that is not a JSON object with a string "key" is an error naming the line;
// the file is then left untouched.
#pragma once

#include <map>

#include "results/store.h"

namespace kvb {

class JsonlStore : public ResultStore {
 public:
  explicit JsonlStore(std::string path);
  bool has_cell(const std::string& key) const override { return index_.count(key) > 0; }
  void write_cell(const nlohmann::json& record) override;
  std::vector<nlohmann::json> cells() const override { return records_; }
  std::string path() const override { return path_; }

 private:
  std::string path_;
  std::vector<nlohmann::json> records_;
  std::map<std::string, size_t> index_;
};

}  // namespace kvb
