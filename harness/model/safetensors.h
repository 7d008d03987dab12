// safetensors reader (mmap, header parsed with nlohmann/json, every offset validated) and writer.
// Torch-free; harness/model/weights.h turns entries into torch tensors.
// Format: u64 little-endian header length N, N bytes of JSON header, then the data buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvb {

enum class StDtype { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

size_t st_dtype_size(StDtype d);
const char* st_dtype_name(StDtype d);

struct StTensorInfo {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets into the data buffer
  int64_t numel() const;
};

// One .safetensors file, memory-mapped read-only. Every problem throws kvb::InputError whose
// message starts with the file path.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* find(const std::string& name) const;  // nullptr if absent
  const uint8_t* data(const StTensorInfo& t) const { return data_ + t.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All weights of an HF model directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (weight_map: tensor name -> shard file).
class SafetensorsSet {
 public:
  explicit SafetensorsSet(const std::string& model_dir);
  struct Entry {
    const SafetensorsFile* file;
    const StTensorInfo* info;
  };
  // Throws kvb::InputError naming the directory when `name` is absent.
  Entry get(const std::string& name) const;
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
};

struct StWriteTensor {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  const void* data;  // numel * dtype size bytes, row-major
};

// Writes a single .safetensors file (header padded to 8 bytes, tensors sorted by name as the
// reference implementation does). Throws kvb::Error on I/O failure.
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace kvb
