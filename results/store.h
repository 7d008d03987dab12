// Opening the stores of suites/cell_store.h: JSON Lines (jsonl_store.h) or SQLite (sqlite_store.h).
#pragma once

#include <memory>
#include <string>

#include "suites/cell_store.h"
#include "suites/runner.h"

namespace kvb {

// Opens (creating when absent) the JSON Lines store at `path`.
// kvb::InputError "<path>:<line>: ..." when an existing file holds something that is not a record.
std::unique_ptr<ResultStore> open_result_store(const std::string& path);
// Opens (creating when absent) the SQLite store at `path`; kvb::InputError "<path>: ..." when an
// existing file is not a kvbench database this build can use.
std::unique_ptr<ResultStore> open_sqlite_store(const std::string& path);

// The store `kvbench run` writes to: SQLite when opt.db_path is set, JSON Lines otherwise.
StoreOpener store_opener(const SuiteRunOptions& opt);

}  // namespace kvb
