// safetensors reader/writer: round trips, sharded sets, every malformed-input case, and a
// seeded mutation test (a corrupted file either opens with all ranges in bounds or throws
// kvb::InputError). Torch-free.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include "common/check.h"
#include "harness/model/safetensors.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed on destruction.
class StTempDir {
 public:
  StTempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("kvb_test_safetensors_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(counter.fetch_add(1)));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~StTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text and `data_bytes` bytes of data after it.
std::string st_file(const std::string& header, size_t data_bytes) {
  return u64le(header.size()) + header + std::string(data_bytes, '\x5a');
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + 37 * i + (i >> 3));
  return v;
}

const StDtype kAllDtypes[] = {StDtype::BOOL, StDtype::U8,  StDtype::I8,   StDtype::I16,
                              StDtype::U16,  StDtype::F16, StDtype::BF16, StDtype::I32,
                              StDtype::U32,  StDtype::F32, StDtype::F64,  StDtype::I64,
                              StDtype::U64};

TEST(Safetensors, DtypeNamesAndSizes) {
  EXPECT_STREQ(st_dtype_name(StDtype::BF16), "BF16");
  EXPECT_STREQ(st_dtype_name(StDtype::BOOL), "BOOL");
  EXPECT_EQ(st_dtype_size(StDtype::BOOL), 1u);
  EXPECT_EQ(st_dtype_size(StDtype::U16), 2u);
  EXPECT_EQ(st_dtype_size(StDtype::BF16), 2u);
  EXPECT_EQ(st_dtype_size(StDtype::U32), 4u);
  EXPECT_EQ(st_dtype_size(StDtype::F64), 8u);
  EXPECT_EQ(st_dtype_size(StDtype::U64), 8u);
}

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  StTempDir dir;
  const std::string path = dir.file("model.safetensors");
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<StWriteTensor> tensors;
  int k = 0;
  for (StDtype d : kAllDtypes) {
    const std::vector<int64_t> shape = {2, 3 + k % 3};
    const size_t bytes = static_cast<size_t>(shape[0] * shape[1]) * st_dtype_size(d);
    buffers.push_back(pattern(bytes, static_cast<uint8_t>(k)));
    if (d == StDtype::BOOL) {
      for (auto& b : buffers.back()) b &= 1;
    }
    // Names in reverse order of writing so that the writer's sort is exercised.
    tensors.push_back({"t" + std::to_string(50 - k) + "_" + st_dtype_name(d), d, shape, nullptr});
    ++k;
  }
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].data = buffers[i].data();
  const std::vector<uint8_t> scalar = pattern(4, 9);
  tensors.push_back({"scalar", StDtype::F32, {}, scalar.data()});
  tensors.push_back({"empty", StDtype::F16, {0, 7}, nullptr});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "a b\nc"}};
  write_safetensors(path, tensors, meta);

  const std::string raw = read_bytes(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ(raw[8], '{');
  EXPECT_FALSE(fs::exists(path + ".tmp")) << "temp file left behind";
  for (const auto& e : fs::directory_iterator(dir.str())) {
    EXPECT_EQ(e.path().filename(), "model.safetensors") << "stray file " << e.path();
  }

  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StWriteTensor& w = tensors[i];
    const StTensorInfo* t = f.find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->name, w.name);
    EXPECT_EQ(t->dtype, w.dtype) << w.name;
    EXPECT_EQ(t->shape, w.shape) << w.name;
    const size_t bytes = static_cast<size_t>(t->numel()) * st_dtype_size(t->dtype);
    EXPECT_EQ(t->end - t->begin, bytes) << w.name;
    if (bytes > 0) {
      EXPECT_EQ(std::memcmp(f.data(*t), w.data, bytes), 0) << w.name;
    }
  }
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.find("scalar")->numel(), 1);
  EXPECT_EQ(f.find("empty")->numel(), 0);

  // The writer lays tensors out in name order.
  std::vector<std::string> by_offset;
  for (const auto& t : f.tensors()) by_offset.push_back(t.name);
  std::vector<std::string> sorted = by_offset;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(by_offset, sorted);

  // Overwriting goes through a temp file + rename.
  write_safetensors(path, {{"x", StDtype::U8, {1}, scalar.data()}});
  SafetensorsFile g(path);
  ASSERT_EQ(g.tensors().size(), 1u);
  EXPECT_TRUE(g.metadata().empty());
  EXPECT_EQ(*g.data(g.tensors()[0]), scalar[0]);
}

TEST(Safetensors, EmptyFileAndSingleFileSet) {
  StTempDir dir;
  write_safetensors(dir.file("model.safetensors"), {});
  SafetensorsFile f(dir.file("model.safetensors"));
  EXPECT_TRUE(f.tensors().empty());

  const std::vector<uint8_t> a = pattern(12, 1);
  write_safetensors(dir.file("model.safetensors"), {{"a", StDtype::F32, {3}, a.data()}});
  SafetensorsSet set(dir.str());
  EXPECT_TRUE(set.has("a"));
  EXPECT_FALSE(set.has("b"));
  EXPECT_EQ(set.names(), std::vector<std::string>{"a"});
  EXPECT_EQ(set.files().size(), 1u);
  auto e = set.get("a");
  EXPECT_EQ(std::memcmp(e.file->data(*e.info), a.data(), 12), 0);
  try {
    set.get("b");
    FAIL() << "expected InputError";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find(dir.str()), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("'b'"), std::string::npos) << err.what();
  }
}

TEST(Safetensors, ReadsUnpaddedHeaderAndIgnoresUnknownKeys) {
  // Other writers need not pad the header; the data then starts unaligned.
  StTempDir dir;
  const std::string header = R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6],"extra":1},)"
                             R"("a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes = u64le(header.size()) + header + std::string("\x01\x02\x03\x04\x05\x06", 6);
  write_bytes(dir.file("x.safetensors"), bytes);
  SafetensorsFile f(dir.file("x.safetensors"));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // sorted by data offset
  EXPECT_EQ(f.find("b")->begin, 4u);
  EXPECT_EQ(f.data(*f.find("b"))[1], 6);
}

// ---- sharded sets ----------------------------------------------------------------------------

struct Shards {
  std::vector<uint8_t> a = pattern(8, 1), b = pattern(6, 2), c = pattern(4, 3);
  void write(const StTempDir& dir) const {
    write_safetensors(
        dir.file("model-00001-of-00002.safetensors"),
        {{"layer.0.w", StDtype::F32, {2}, a.data()}, {"layer.0.b", StDtype::F16, {3}, b.data()}});
    write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                      {{"layer.1.w", StDtype::BF16, {2}, c.data()}});
  }
};

const char* kGoodIndex = R"({"metadata": {"total_size": 18}, "weight_map": {
  "layer.0.w": "model-00001-of-00002.safetensors",
  "layer.0.b": "model-00001-of-00002.safetensors",
  "layer.1.w": "model-00002-of-00002.safetensors"}})";

TEST(SafetensorsSet, ShardedViaIndex) {
  StTempDir dir;
  Shards s;
  s.write(dir);
  write_bytes(dir.file("model.safetensors.index.json"), kGoodIndex);
  SafetensorsSet set(dir.str());
  EXPECT_EQ(set.files().size(), 2u);
  EXPECT_EQ(set.names(), (std::vector<std::string>{"layer.0.b", "layer.0.w", "layer.1.w"}));
  auto e = set.get("layer.1.w");
  EXPECT_EQ(e.file->path(), dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(e.info->dtype, StDtype::BF16);
  EXPECT_EQ(std::memcmp(e.file->data(*e.info), s.c.data(), 4), 0);
  e = set.get("layer.0.b");
  EXPECT_EQ(e.info->shape, std::vector<int64_t>{3});
  EXPECT_EQ(std::memcmp(e.file->data(*e.info), s.b.data(), 6), 0);
  EXPECT_THROW(set.get("layer.2.w"), InputError);
}

void expect_input_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected InputError containing '" << needles.back() << "'";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
}

TEST(SafetensorsSet, Errors) {
  {
    StTempDir dir;
    expect_input_error([&] { SafetensorsSet s(dir.str()); },
                       {dir.str() + ": no model.safetensors or model.safetensors.index.json"});
  }
  struct Case {
    const char* name;
    std::string index;
    std::string keyword;
  };
  const std::vector<Case> cases = {
      {"not json", "{\"weight_map\": ", "invalid JSON"},
      {"not object", "[1]", "expected a JSON object"},
      {"no weight_map", R"({"metadata": {}})", "weight_map"},
      {"weight_map not object", R"({"weight_map": [1]})", "weight_map: expected an object"},
      {"value not string", R"({"weight_map": {"layer.0.w": 3}})", "expected a string"},
      {"missing shard", R"({"weight_map": {"layer.0.w": "model-00003.safetensors"}})",
       "does not exist"},
      {"escaping shard", R"({"weight_map": {"layer.0.w": "../x.safetensors"}})",
       "inside the model directory"},
      {"name not in shard", R"({"weight_map": {"layer.1.w": "model-00001-of-00002.safetensors"}})",
       "'layer.1.w' in "},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StTempDir dir;
    Shards s;
    s.write(dir);
    const std::string index_path = dir.file("model.safetensors.index.json");
    write_bytes(index_path, c.index);
    expect_input_error([&] { SafetensorsSet set(dir.str()); }, {index_path + ": ", c.keyword});
  }
  {
    // A corrupt shard is reported with the shard's own path.
    StTempDir dir;
    Shards s;
    s.write(dir);
    write_bytes(dir.file("model.safetensors.index.json"), kGoodIndex);
    const std::string shard = dir.file("model-00002-of-00002.safetensors");
    write_bytes(shard, "abc");
    expect_input_error([&] { SafetensorsSet set(dir.str()); }, {shard + ": ", "shorter"});
  }
}

// ---- malformed files -------------------------------------------------------------------------

struct BadCase {
  const char* name;
  std::string bytes;  // file content
  std::string keyword;
};

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

std::vector<BadCase> bad_cases() {
  const std::string ok_a = entry("F32", "[2,3]", "[0,24]");
  std::vector<BadCase> c = {
      {"shorter than 8 bytes", "abcde", "shorter than the 8-byte"},
      {"empty file", "", "shorter than the 8-byte"},
      {"header length 0", u64le(0) + "xxxx", "header length 0"},
      {"header length over 100 MB", u64le(100'000'001) + "{}", "exceeds the limit"},
      {"header length huge", u64le(~0ull) + "{}", "exceeds the limit"},
      {"header length past end", u64le(99999) + std::string(1226, ' '),
       "header length 99999 runs past the end of the file (1234 bytes)"},
      {"header not JSON", st_file("{\"a\": ", 0), "invalid JSON"},
      {"header not UTF-8", st_file("{\"\xff\xfe\": 1}", 0), "invalid JSON"},
      {"header with NUL padding", st_file(std::string("{}") + '\0', 0), "invalid JSON"},
      {"header deeply nested", st_file(std::string(5000, '[') + std::string(5000, ']'), 0),
       "nesting deeper than 64 levels"},
      {"header is an array", st_file("[1,2]", 0), "expected a JSON object"},
      {"header is a string", st_file("\"x\"", 0), "expected a JSON object"},
      {"entry not an object", st_file(R"({"a": 3})", 0), "a: expected an object"},
      {"entry is an array", st_file(R"({"a": [1]})", 0), "a: expected an object"},
      {"missing dtype", st_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4),
       "a.dtype: missing"},
      {"missing shape", st_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4),
       "a.shape: missing"},
      {"missing data_offsets", st_file(R"({"a":{"dtype":"F32","shape":[1]}})", 4),
       "a.data_offsets: missing"},
      {"dtype not a string", st_file(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
       "a.dtype: expected a string"},
      {"shape not an array", st_file("{\"a\":" + entry("F32", "4", "[0,4]") + "}", 4),
       "a.shape: expected an array"},
      {"shape entry a float", st_file("{\"a\":" + entry("F32", "[1.0]", "[0,4]") + "}", 4),
       "a.shape[0]: expected an integer"},
      {"shape entry a string", st_file("{\"a\":" + entry("F32", "[\"1\"]", "[0,4]") + "}", 4),
       "a.shape[0]: expected an integer"},
      {"shape entry an array", st_file("{\"a\":" + entry("F32", "[[1]]", "[0,4]") + "}", 4),
       "a.shape[0]: expected an integer"},
      {"data_offsets not an array", st_file("{\"a\":" + entry("F32", "[1]", "4") + "}", 4),
       "a.data_offsets"},
      {"data_offsets one element", st_file("{\"a\":" + entry("F32", "[1]", "[4]") + "}", 4),
       "a.data_offsets"},
      {"data_offsets three elements", st_file("{\"a\":" + entry("F32", "[1]", "[0,4,8]") + "}", 4),
       "a.data_offsets"},
      {"data_offsets negative", st_file("{\"a\":" + entry("F32", "[1]", "[-4,0]") + "}", 4),
       "a.data_offsets"},
      {"data_offsets float", st_file("{\"a\":" + entry("F32", "[1]", "[0,4.0]") + "}", 4),
       "a.data_offsets"},
      {"data_offsets string", st_file("{\"a\":" + entry("F32", "[1]", "[0,\"4\"]") + "}", 4),
       "a.data_offsets"},
      {"unknown dtype", st_file("{\"a\":" + entry("F8_E4M3", "[4]", "[0,4]") + "}", 4),
       "unknown dtype 'F8_E4M3'"},
      {"lowercase dtype", st_file("{\"a\":" + entry("f32", "[1]", "[0,4]") + "}", 4),
       "unknown dtype 'f32'"},
      {"negative dim", st_file("{\"a\":" + entry("F32", "[-1,2]", "[0,4]") + "}", 4),
       "a.shape[0]: expected an integer in [0, 9223372036854775807], got an integer -1"},
      {"dim over int64",
       st_file("{\"a\":" + entry("F32", "[18446744073709551615]", "[0,4]") + "}", 4),
       "a.shape[0]: expected an integer in [0, 9223372036854775807]"},
      {"numel overflow",
       st_file("{\"a\":" + entry("F32", "[4294967296,4294967296,4294967296]", "[0,4]") + "}", 4),
       "overflow"},
      {"bytes overflow",
       st_file("{\"a\":" + entry("F64", "[1152921504606846976,4]", "[0,4]") + "}", 4), "overflow"},
      {"begin > end", st_file("{\"a\":" + entry("F32", "[1]", "[8,4]") + "}", 8), "begin > end"},
      {"end past buffer", st_file("{\"a\":" + entry("F32", "[2,3]", "[0,24]") + "}", 20),
       "runs past the data buffer (20 bytes)"},
      {"end huge", st_file("{\"a\":" + entry("F32", "[1]", "[0,18446744073709551615]") + "}", 4),
       "a.data_offsets[1]: expected an integer in [0, 9223372036854775807]"},
      {"size mismatch", st_file("{\"a\":" + entry("F32", "[2,3]", "[0,20]") + "}", 20),
       "shape [2,3] F32 needs 24 bytes, data_offsets give 20"},
      {"overlap", st_file("{\"a\":" + ok_a + ",\"b\":" + entry("F32", "[2]", "[20,28]") + "}", 28),
       "overlap"},
      {"identical ranges", st_file("{\"a\":" + ok_a + ",\"b\":" + ok_a + "}", 24), "overlap"},
      {"gap between",
       st_file("{\"a\":" + ok_a + ",\"b\":" + entry("F32", "[2]", "[28,36]") + "}", 36),
       "gap of 4 bytes between tensors 'a'"},
      {"gap before first", st_file("{\"b\":" + entry("F32", "[2]", "[4,12]") + "}", 12),
       "gap of 4 bytes before the first tensor 'b'"},
      {"gap after last", st_file("{\"a\":" + ok_a + "}", 30), "gap of 6 bytes after the last"},
      {"data but no tensors", st_file("{}", 8), "gap"},
      {"data but only metadata", st_file(R"({"__metadata__":{"a":"b"}})", 8), "gap"},
      {"metadata not an object", st_file(R"({"__metadata__":"x"})", 0),
       "__metadata__: expected an object"},
      {"metadata value not a string", st_file(R"({"__metadata__":{"k":1}})", 0),
       "__metadata__.k: expected a string, got an integer 1"},
      {"metadata value an object", st_file(R"({"__metadata__":{"k":{}}})", 0),
       "__metadata__.k: expected a string"},
      {"control chars in name stay on one line",
       st_file("{\"a\\nb\":" + entry("F32", "[1]", "[0,8]") + "}", 8), "'a\\x0ab'"},
  };
  return c;
}

TEST(SafetensorsMalformed, EveryCaseThrowsInputErrorNamingTheFile) {
  StTempDir dir;
  const std::string path = dir.file("model.safetensors");
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.name);
    write_bytes(path, c.bytes);
    expect_input_error([&] { SafetensorsFile f(path); }, {path + ": ", c.keyword});
  }
  SCOPED_TRACE("missing file");
  expect_input_error([&] { SafetensorsFile f(dir.file("nope.safetensors")); },
                     {dir.file("nope.safetensors") + ": ", "cannot open"});
  SCOPED_TRACE("directory");
  expect_input_error([&] { SafetensorsFile f(dir.str()); },
                     {dir.str() + ": ", "not a regular file"});
}

TEST(SafetensorsMalformed, ValidEdgeCasesOpen) {
  StTempDir dir;
  const std::string path = dir.file("m.safetensors");
  const std::vector<std::string> good = {
      st_file("{}", 0),
      st_file("{}        ", 0),
      st_file(R"({"__metadata__":{}})", 0),
      st_file("{\"a\":" + entry("F32", "[0,5]", "[0,0]") + ",\"b\":" + entry("U8", "[]", "[0,1]") +
                  ",\"c\":" + entry("BF16", "[1,0]", "[1,1]") + "}",
              1),
  };
  for (const auto& bytes : good) {
    write_bytes(path, bytes);
    EXPECT_NO_THROW(SafetensorsFile f(path));
  }
}

// ---- mutation test ---------------------------------------------------------------------------

TEST(SafetensorsMalformed, RandomMutationsNeverCrash) {
  StTempDir dir;
  const std::string good_path = dir.file("good.safetensors");
  const std::vector<uint8_t> a = pattern(24, 1), b = pattern(8, 2), c = pattern(6, 3);
  write_safetensors(good_path,
                    {{"model.embed_tokens.weight", StDtype::F32, {2, 3}, a.data()},
                     {"model.norm.weight", StDtype::BF16, {4}, b.data()},
                     {"lm_head.bias", StDtype::I16, {3}, c.data()},
                     {"flag", StDtype::BOOL, {0}, nullptr}},
                    {{"format", "pt"}});
  const std::string good = read_bytes(good_path);
  const size_t header_end =
      8 + static_cast<uint8_t>(good[0]) + 256u * static_cast<uint8_t>(good[1]);
  ASSERT_LT(header_end, good.size());

  const std::string path = dir.file("mutated.safetensors");
  std::mt19937_64 rng(20240601);
  int opened = 0, rejected = 0;
  const char* kJsonChars = "{}[]\",:0123456789-.eE \\tfnu";
  for (int iter = 0; iter < 2000; ++iter) {
    std::string m = good;
    const int kind = static_cast<int>(rng() % 6);
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      // Most mutations hit the length field or the header, where the parser is.
      const size_t limit = (rng() % 4 != 0) ? std::min(header_end, m.size()) : m.size();
      const size_t pos = rng() % limit;
      switch (kind) {
        case 0:
          m[pos] = static_cast<char>(m[pos] ^ (1u << (rng() % 8)));
          break;
        case 1:
          m[pos] = static_cast<char>(rng() & 0xff);
          break;
        case 2:
          m[pos] = kJsonChars[rng() % std::strlen(kJsonChars)];
          break;
        case 3:
          m.resize(pos);
          break;
        case 4:
          m.erase(pos, 1 + rng() % 4);
          break;
        case 5:
          m.insert(pos, 1, kJsonChars[rng() % std::strlen(kJsonChars)]);
          break;
      }
    }
    write_bytes(path, m);
    try {
      SafetensorsFile f(path);
      ++opened;
      uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(m[i]);
      const size_t data_size = m.size() - 8 - n;
      size_t covered = 0;
      for (const StTensorInfo& t : f.tensors()) {
        ASSERT_LE(t.begin, t.end) << "iter " << iter;
        ASSERT_LE(t.end, data_size) << "iter " << iter;
        ASSERT_LE(8 + n + t.end, m.size()) << "iter " << iter;
        ASSERT_EQ(static_cast<size_t>(t.numel()) * st_dtype_size(t.dtype), t.end - t.begin);
        covered += t.end - t.begin;
        // Touch every byte: out-of-range reads would fault.
        unsigned sum = 0;
        for (size_t i = 0; i < t.end - t.begin; ++i) sum += f.data(t)[i];
        ASSERT_EQ(std::memcmp(f.data(t), m.data() + 8 + n + t.begin, t.end - t.begin), 0)
            << "iter " << iter << " sum " << sum;
      }
      EXPECT_EQ(covered, data_size) << "iter " << iter;
    } catch (const InputError& e) {
      ++rejected;
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "iter " << iter << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "iter " << iter << ": " << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iter " << iter << ": unexpected exception " << typeid(e).name() << ": "
                    << e.what();
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 1000);
  std::cout << "mutations: " << opened << " opened, " << rejected << " rejected\n";
}

}  // namespace
}  // namespace kvb
