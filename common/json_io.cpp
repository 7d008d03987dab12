#include "common/json_io.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/json_reader.h"

namespace kvb {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KVB_INPUT_CHECK(in.good(), path, ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::string& path) { return read_json_input(path); }

void write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    KVB_CHECK(out.good(), "cannot write ", tmp);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    KVB_CHECK(out.good(), "write failed: ", tmp);
  }
  std::filesystem::rename(tmp, path);
}

bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

}  // namespace kvb
