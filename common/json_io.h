// Small helpers to read JSON files with errors that name the file.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvb {

// Reads and parses `path` through read_json_input (common/json_reader.h): kvb::InputError
// "<path>: ..." when missing, not valid JSON, too deep, or with a duplicate key.
nlohmann::json read_json_file(const std::string& path);
// Reads a whole file as bytes; kvb::InputError "<path>: cannot open" when unreadable.
std::string read_file(const std::string& path);
// Writes `text` to `path` atomically (temp file + rename); kvb::Error on failure.
void write_file(const std::string& path, const std::string& text);
bool file_exists(const std::string& path);

}  // namespace kvb
