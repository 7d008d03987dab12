// A cell record as a results store holds it (suites/runner.cpp writes it; JSON Lines or the
// `record` column of SQLite's cells table), read back through common/json_reader.h: what every
// reader of stored records relies on is checked once here, so that a damaged record is one line
// "<source>: <json.path>: expected X, got Y" (kvb::InputError), never an exception from deep in
// a reader.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kvb {

// Parses `text` (parse_json: depth, duplicate keys, number range) and checks it as a record:
// an object whose key, suite, model, method and dataset are strings, params and metrics
// objects, dtype (when present) a dtype parse_dtype() knows, and in metrics: applicable a boolean,
// not_applicable a string (when present); calibration (when present) an array of objects with
// string stage, path and hash (the artifacts a calibrating method used, suites/runner.h). `source` names the record in messages ("out/q.db: cell
// 12").
nlohmann::json parse_cell_record(std::string_view text, const std::string& source);
// The same checks on a record already parsed.
void check_cell_record(const nlohmann::json& record, const std::string& source);

}  // namespace kvb
