#include "harness/model/weights.h"

#include <cstring>
#include <limits>
#include <sstream>

#include "common/check.h"

namespace kvb {

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

struct DtypePair {
  StDtype st;
  torch::ScalarType torch;
};

const DtypePair kPairs[] = {
    {StDtype::F32, at::kFloat},  {StDtype::F16, at::kHalf},  {StDtype::BF16, at::kBFloat16},
    {StDtype::F64, at::kDouble}, {StDtype::BOOL, at::kBool}, {StDtype::U8, at::kByte},
    {StDtype::I8, at::kChar},    {StDtype::I16, at::kShort}, {StDtype::I32, at::kInt},
    {StDtype::I64, at::kLong},
};

// Widens little-endian unsigned values of type U (unaligned source) into a tensor of type W.
template <typename U, typename W>
at::Tensor widen(const uint8_t* src, const std::vector<int64_t>& shape, at::ScalarType wtype,
                 const std::string& where) {
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(wtype));
  W* dst = out.data_ptr<W>();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) {
    U v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(U)), sizeof(U));
    if constexpr (sizeof(U) == sizeof(W)) {
      if (v > static_cast<U>(std::numeric_limits<W>::max())) {
        throw InputError(
            detail::concat(where, ": U64 value ", v, " at element ", i, " does not fit in int64"));
      }
    }
    dst[i] = static_cast<W>(v);
  }
  return out;
}

}  // namespace

bool st_dtype_to_torch(StDtype d, torch::ScalarType* out) {
  for (const auto& p : kPairs) {
    if (p.st == d) {
      *out = p.torch;
      return true;
    }
  }
  return false;
}

bool torch_to_st_dtype(torch::ScalarType t, StDtype* out) {
  for (const auto& p : kPairs) {
    if (p.torch == t) {
      *out = p.st;
      return true;
    }
  }
  return false;
}

torch::Tensor load_weight(const SafetensorsSet& weights, const std::string& name,
                          torch::ScalarType dtype, const std::vector<int64_t>& expected_shape) {
  const SafetensorsSet::Entry e = weights.get(name);
  const StTensorInfo& info = *e.info;
  if (!expected_shape.empty() && expected_shape != info.shape) {
    throw InputError(detail::concat(e.file->path(), ": tensor '", name, "' has shape ",
                                    shape_str(info.shape), ", config.json implies ",
                                    shape_str(expected_shape)));
  }
  const uint8_t* src = e.file->data(info);
  const size_t bytes = info.end - info.begin;
  const std::string where = detail::concat(e.file->path(), ": tensor '", name, "'");

  at::Tensor t;
  switch (info.dtype) {
    case StDtype::U16:
      t = widen<uint16_t, int32_t>(src, info.shape, at::kInt, where);
      break;
    case StDtype::U32:
      t = widen<uint32_t, int64_t>(src, info.shape, at::kLong, where);
      break;
    case StDtype::U64:
      t = widen<uint64_t, int64_t>(src, info.shape, at::kLong, where);
      break;
    default: {
      torch::ScalarType src_type;
      KVB_CHECK(st_dtype_to_torch(info.dtype, &src_type), "no torch dtype for ",
                st_dtype_name(info.dtype));
      // BOOL goes through U8 so that bytes other than 0/1 never become torch bools.
      const bool is_bool = info.dtype == StDtype::BOOL;
      t = at::empty(info.shape, at::TensorOptions().dtype(is_bool ? at::kByte : src_type));
      KVB_CHECK(static_cast<size_t>(t.numel()) * t.element_size() == bytes, where,
                ": size mismatch");
      // The data may be unaligned (unpadded headers): copy bytes, never reinterpret in place.
      if (bytes > 0) std::memcpy(t.data_ptr(), src, bytes);
      if (is_bool) t = t.ne(0);
    }
  }
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

void save_weights(const std::string& path,
                  const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies, alive until written
  keep.reserve(tensors.size());
  std::vector<StWriteTensor> out;
  out.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    KVB_CHECK(tensor.defined(), path, ": tensor '", name, "' is undefined");
    KVB_CHECK(tensor.layout() == at::kStrided, path, ": tensor '", name, "' is not dense");
    StDtype st;
    if (!torch_to_st_dtype(tensor.scalar_type(), &st)) {
      std::ostringstream os;
      os << tensor.scalar_type();
      throw Error(detail::concat(path, ": tensor '", name, "' has dtype ", os.str(),
                                 ", which safetensors output does not support"));
    }
    keep.push_back(tensor.detach().cpu().contiguous());
    const at::Tensor& c = keep.back();
    out.push_back(StWriteTensor{name, st, c.sizes().vec(), c.numel() > 0 ? c.data_ptr() : nullptr});
  }
  write_safetensors(path, out, metadata);
}

}  // namespace kvb
