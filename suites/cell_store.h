// Where a suite run puts its finished cells. The implementations (JSON Lines, SQLite) live in
// results/ above this layer; the runner only sees this interface.
//
// A cell record is one JSON object with a string "key" (model + canonical method spec + dataset +
// suite-parameter hash, built by the suite runner). write_cell() makes the record durable before
// it returns, so an interrupted run loses at most the cell in flight; has_cell() is how a
// resumed run skips finished cells.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvb {

class ResultStore {
 public:
  virtual ~ResultStore() = default;
  virtual bool has_cell(const std::string& key) const = 0;
  // Appends `record` (an object with a string "key"); flushed to disk before returning.
  virtual void write_cell(const nlohmann::json& record) = 0;
  // Every record held, in the order written.
  virtual std::vector<nlohmann::json> cells() const = 0;
  virtual std::string path() const = 0;
  // A run's provenance and config (keys: name, config_hash, suite_name, seed, config, started_at and
  // those of run_provenance()); the SQLite store records it (with the run's first cell: a run
  // that stores nothing writes nothing), JSON Lines has nowhere to.
  virtual void begin_run(const nlohmann::json& run) {}
  // Every cell of the run is finished (the SQLite store keeps the time it first was).
  virtual void end_run() {}
};

}  // namespace kvb
