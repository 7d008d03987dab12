// safetensors reader and writer. See safetensors.h; the format is documented at
// https://github.com/huggingface/safetensors ("Format"). Validation follows the reference
// implementation: the header is a JSON object, every tensor's byte range matches its shape and
// dtype, and the tensors cover the data buffer exactly, without gaps or overlaps.
#include "harness/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "common/check.h"
#include "common/json_reader.h"

namespace kvb {

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 64;                  // a valid header nests 3 levels deep
constexpr size_t kMaxRank = 16;                    // dimensions of one tensor's shape
constexpr size_t kMaxQuotedChars = 120;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

struct DtypeName {
  StDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeName kDtypes[] = {
    {StDtype::BOOL, "BOOL", 1}, {StDtype::U8, "U8", 1},   {StDtype::I8, "I8", 1},
    {StDtype::I16, "I16", 2},   {StDtype::U16, "U16", 2}, {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2}, {StDtype::I32, "I32", 4}, {StDtype::U32, "U32", 4},
    {StDtype::F32, "F32", 4},   {StDtype::F64, "F64", 8}, {StDtype::I64, "I64", 8},
    {StDtype::U64, "U64", 8},
};

const DtypeName& dtype_entry(StDtype d) {
  for (const auto& e : kDtypes) {
    if (e.dtype == d) return e;
  }
  throw Error(detail::concat("safetensors: invalid StDtype value ", static_cast<int>(d)));
}

// A name or string from the file, quoted for a one-line message: control characters escaped,
// long strings shortened.
std::string quote(const std::string& s) {
  std::string out = "'";
  size_t n = 0;
  for (unsigned char c : s) {
    if (++n > kMaxQuotedChars) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += "'";
  return out;
}

// One line: newlines and other control characters become spaces.
std::string one_line(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string errno_str(int err) { return std::strerror(err); }

// numel and byte count of a shape; false on overflow.
bool shape_bytes(const std::vector<int64_t>& shape, size_t elem_size, int64_t* numel,
                 size_t* bytes) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  size_t b = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(n), elem_size, &b)) return false;
  *numel = n;
  *bytes = b;
  return true;
}

// Everything parsed out of one file.
struct Parsed {
  std::vector<StTensorInfo> tensors;  // sorted by data offset
  std::map<std::string, size_t> index;
  std::map<std::string, std::string> metadata;
  size_t data_offset = 0;  // 8 + header length
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const uint8_t* bytes, size_t size)
      : path_(path), bytes_(bytes), size_(size) {}

  Parsed parse() {
    Parsed p;
    if (size_ < 8) {
      fail("file is ", size_, " bytes, shorter than the 8-byte header length field");
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes_[i];
    if (n == 0) fail("header length 0 (the JSON header must not be empty)");
    if (n > kMaxHeaderBytes) {
      fail("header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
    }
    if (n > size_ - 8) {
      fail("header length ", n, " runs past the end of the file (", size_, " bytes)");
    }
    p.data_offset = 8 + static_cast<size_t>(n);
    const size_t data_size = size_ - p.data_offset;

    const json header =
        parse_header(reinterpret_cast<const char*>(bytes_ + 8), static_cast<size_t>(n));
    const JsonNode root(header, path_ + ": header");
    if (!header.is_object()) root.expected("a JSON object");

    for (const auto& [name, entry] : root.members()) {
      if (name == "__metadata__") {
        p.metadata = parse_metadata(entry);
        continue;
      }
      p.tensors.push_back(parse_entry(name, entry, data_size));
    }

    std::sort(p.tensors.begin(), p.tensors.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    check_coverage(p.tensors, data_size);
    for (size_t i = 0; i < p.tensors.size(); ++i) p.index[p.tensors[i].name] = i;
    return p;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    throw InputError(one_line(detail::concat(path_, ": ", args...)));
  }

  // Through the one JSON reading layer (common/json_reader.h): nesting, duplicate keys and
  // numbers beyond double are refused there.
  json parse_header(const char* text, size_t n) const {
    // nlohmann treats a NUL byte as the end of input; JSON allows none anywhere.
    if (const void* nul = std::memchr(text, '\0', n)) {
      fail("header: invalid JSON: NUL byte at header offset ",
           static_cast<const char*>(nul) - text);
    }
    JsonLimits limits;
    limits.max_depth = kMaxJsonDepth;
    return parse_json(std::string_view(text, n), path_ + ": header", limits);
  }

  // A shape dimension or an offset: an integer written as one (not 4.0, as the reference
  // implementation's parser wants), in [0, 2^63).
  static int64_t whole_number(const JsonNode& v) {
    if (!v.raw().is_number_integer()) v.expected("an integer");
    return v.integer(0, std::numeric_limits<int64_t>::max());
  }

  std::map<std::string, std::string> parse_metadata(const JsonNode& v) const {
    std::map<std::string, std::string> out;
    for (const auto& [key, value] : v.members()) out[key] = value.str();
    return out;
  }

  StTensorInfo parse_entry(const std::string& name, const JsonNode& v, size_t data_size) const {
    const std::string who = "tensor " + quote(name);
    v.object();
    StTensorInfo t;
    t.name = name;

    const JsonNode dt = v.at("dtype");
    const std::string dname = dt.str();
    bool found = false;
    for (const auto& e : kDtypes) {
      if (dname == e.name) {
        t.dtype = e.dtype;
        found = true;
      }
    }
    if (!found) fail(who, ": unknown dtype ", quote(dname));

    const JsonNode sh = v.at("shape");
    sh.array();
    if (sh.size() > kMaxRank) {
      fail(who, ": shape has ", sh.size(), " dimensions, more than ", kMaxRank);
    }
    for (const JsonNode& d : sh.items()) t.shape.push_back(whole_number(d));

    const JsonNode off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2) off.expected("[begin, end]");
    const auto begin = static_cast<uint64_t>(whole_number(off[0]));
    const auto end = static_cast<uint64_t>(whole_number(off[1]));
    if (begin > end) fail(who, ": data_offsets [", begin, ",", end, "] have begin > end");
    if (end > data_size) {
      fail(who, ": data_offsets end ", end, " runs past the data buffer (", data_size, " bytes)");
    }
    t.begin = static_cast<size_t>(begin);
    t.end = static_cast<size_t>(end);

    const size_t esize = dtype_entry(t.dtype).size;
    int64_t numel = 0;
    size_t bytes = 0;
    if (!shape_bytes(t.shape, esize, &numel, &bytes)) {
      fail(who, ": shape ", shape_str(t.shape), " ", dname, " has too many elements (overflow)");
    }
    if (bytes != t.end - t.begin) {
      fail(who, ": shape ", shape_str(t.shape), " ", dname, " needs ", bytes,
           " bytes, data_offsets give ", t.end - t.begin);
    }
    return t;
  }

  // `tensors` sorted by (begin, end): they must tile [0, data_size) exactly.
  void check_coverage(const std::vector<StTensorInfo>& tensors, size_t data_size) const {
    size_t pos = 0;
    const StTensorInfo* prev = nullptr;
    for (const StTensorInfo& t : tensors) {
      if (t.begin < pos) {
        fail("tensors ", quote(prev->name), " [", prev->begin, ",", prev->end, ") and ",
             quote(t.name), " [", t.begin, ",", t.end, ") overlap");
      }
      if (t.begin > pos) {
        if (prev) {
          fail("gap of ", t.begin - pos, " bytes between tensors ", quote(prev->name), " (ends at ",
               pos, ") and ", quote(t.name), " (begins at ", t.begin,
               "); the data buffer must be covered contiguously");
        }
        fail("gap of ", t.begin, " bytes before the first tensor ", quote(t.name),
             "; the data buffer must be covered contiguously");
      }
      pos = t.end;
      prev = &t;
    }
    if (pos != data_size) {
      if (prev) {
        fail("gap of ", data_size - pos, " bytes after the last tensor ", quote(prev->name),
             " (data buffer is ", data_size,
             " bytes); the data buffer must be covered contiguously");
      }
      fail("gap: data buffer of ", data_size, " bytes but no tensors");
    }
  }

  const std::string& path_;
  const uint8_t* bytes_;
  size_t size_;
};

}  // namespace

size_t st_dtype_size(StDtype d) { return dtype_entry(d).size; }
const char* st_dtype_name(StDtype d) { return dtype_entry(d).name; }

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    KVB_CHECK(d >= 0 && !__builtin_mul_overflow(n, d, &n), "bad shape for tensor ", name);
  }
  return n;
}

// ---- SafetensorsFile -----------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw InputError(one_line(path + ": cannot open: " + errno_str(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw InputError(one_line(path + ": cannot stat: " + errno_str(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(one_line(path + ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw InputError(one_line(detail::concat(
        path, ": file is ", size, " bytes, shorter than the 8-byte header length field")));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    throw InputError(one_line(path + ": cannot mmap: " + errno_str(map_err)));
  }
  try {
    Parsed p = HeaderParser(path_, static_cast<const uint8_t*>(map), size).parse();
    tensors_ = std::move(p.tensors);
    index_ = std::move(p.index);
    metadata_ = std::move(p.metadata);
    data_ = static_cast<const uint8_t*>(map) + p.data_offset;
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
  map_ = map;
  map_size_ = size;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const StTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- SafetensorsSet ------------------------------------------------------------------------

namespace {

std::string join_path(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

bool is_file(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

}  // namespace

SafetensorsSet::SafetensorsSet(const std::string& model_dir) : dir_(model_dir) {
  const std::string index_path = join_path(model_dir, "model.safetensors.index.json");
  const std::string single_path = join_path(model_dir, "model.safetensors");
  std::error_code ec;
  const bool have_index = std::filesystem::exists(index_path, ec);

  if (!have_index) {
    if (!std::filesystem::exists(single_path, ec)) {
      throw InputError(
          one_line(model_dir + ": no model.safetensors or model.safetensors.index.json"));
    }
    files_.push_back(std::make_unique<SafetensorsFile>(single_path));
    const SafetensorsFile* f = files_.back().get();
    for (const StTensorInfo& t : f->tensors()) entries_[t.name] = Entry{f, &t};
    return;
  }

  auto fail = [&](const auto&... args) {
    throw InputError(one_line(detail::concat(index_path, ": ", args...)));
  };
  if (!is_file(index_path)) fail("not a regular file");
  const json index = read_json_input(index_path);
  const JsonNode root(index, index_path);
  if (!index.is_object()) root.expected("a JSON object");
  const JsonNode wm = root.at("weight_map");
  if (!wm.is_object()) wm.expected("an object of tensor name to shard file");

  // Shard file name -> opened file, each shard opened once.
  std::map<std::string, const SafetensorsFile*> shards;
  std::vector<std::pair<std::string, std::string>> names;  // tensor name, shard
  for (const auto& [name, value] : wm.members()) {
    const std::string shard = value.str();
    const std::filesystem::path sp(shard);
    bool escapes = shard.empty() || sp.is_absolute();
    for (const auto& part : sp) escapes = escapes || part == "..";
    if (escapes) {
      fail("weight_map shard ", quote(shard), " for tensor ", quote(name),
           " must be a file name inside the model directory");
    }
    names.emplace_back(name, shard);
    if (shards.count(shard)) continue;
    const std::string shard_path = join_path(model_dir, shard);
    if (!is_file(shard_path)) {
      fail("shard file ", quote(shard), " (for tensor ", quote(name), ") does not exist");
    }
    files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
    shards[shard] = files_.back().get();
  }
  for (const auto& [name, shard] : names) {
    const SafetensorsFile* f = shards.find(shard)->second;
    const StTensorInfo* t = f->find(name);
    if (!t) {
      fail("weight_map puts tensor ", quote(name), " in ", f->path(), " but it is not there");
    }
    entries_[name] = Entry{f, t};
  }
}

SafetensorsSet::Entry SafetensorsSet::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw InputError(one_line(dir_ + ": no tensor " + quote(name) + " in the model weights"));
  }
  return it->second;
}

bool SafetensorsSet::has(const std::string& name) const { return entries_.count(name) != 0; }

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

// ---- writer --------------------------------------------------------------------------------

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(tmp + ": write failed: " + errno_str(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const StWriteTensor*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const StWriteTensor* a, const StWriteTensor* b) { return a->name < b->name; });

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::vector<size_t> sizes;
  sizes.reserve(order.size());
  size_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const StWriteTensor& t = *order[i];
    KVB_CHECK(t.name != "__metadata__", path, ": tensor name __metadata__ is reserved");
    KVB_CHECK(i == 0 || order[i - 1]->name != t.name, path, ": duplicate tensor name ", t.name);
    int64_t numel = 0;
    size_t bytes = 0;
    KVB_CHECK(shape_bytes(t.shape, st_dtype_size(t.dtype), &numel, &bytes), path, ": bad shape ",
              shape_str(t.shape), " for tensor ", t.name);
    KVB_CHECK(bytes == 0 || t.data != nullptr, path, ": tensor ", t.name, " has no data");
    json entry = json::object();
    entry["dtype"] = st_dtype_name(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + bytes};
    header[t.name] = std::move(entry);
    sizes.push_back(bytes);
    offset += bytes;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw Error(one_line(path + ": cannot encode the header: " + e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  static std::atomic<unsigned> counter{0};
  const std::string tmp = detail::concat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(tmp + ": cannot create: " + errno_str(errno));
  try {
    write_all(fd, len, sizeof len, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (size_t i = 0; i < order.size(); ++i) write_all(fd, order[i]->data, sizes[i], tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(tmp + ": close failed: " + errno_str(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(tmp + ": cannot rename to " + path + ": " + errno_str(err));
  }
}

}  // namespace kvb
