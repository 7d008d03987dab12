// torch bridge for safetensors: exact round trips, dtype conversion, shape-mismatch message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/check.h"
#include "harness/model/safetensors.h"
#include "harness/model/weights.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

class WeightsTempDir {
 public:
  WeightsTempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("kvb_test_weights_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(counter.fetch_add(1)));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~WeightsTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;  // data_ptr() may be null
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

TEST(Weights, RoundTripF32F16BF16Exact) {
  WeightsTempDir dir;
  at::manual_seed(7);
  const at::Tensor f32 = at::randn({64, 32});
  const at::Tensor f16 = at::randn({3, 5, 7}).to(at::kHalf);
  const at::Tensor bf16 = (at::randn({33}) * 1000).to(at::kBFloat16);
  const at::Tensor scalar = at::full({}, 2.5, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor empty = at::empty({0, 4}, at::TensorOptions().dtype(at::kHalf));
  // Non-contiguous input is written as its contiguous copy.
  const at::Tensor transposed = at::randn({4, 6}).t();
  ASSERT_FALSE(transposed.is_contiguous());
  save_weights(dir.file("model.safetensors"),
               {{"model.layers.0.self_attn.q_proj.weight", f32},
                {"model.layers.0.mlp.up_proj.weight", f16},
                {"model.norm.weight", bf16},
                {"scale", scalar},
                {"empty", empty},
                {"transposed", transposed}},
               {{"format", "pt"}});

  SafetensorsSet set(dir.str());
  EXPECT_EQ(set.files().at(0)->metadata().at("format"), "pt");
  EXPECT_EQ(set.get("model.norm.weight").info->dtype, StDtype::BF16);
  EXPECT_EQ(set.get("model.layers.0.mlp.up_proj.weight").info->dtype, StDtype::F16);

  const at::Tensor g32 =
      load_weight(set, "model.layers.0.self_attn.q_proj.weight", at::kFloat, {64, 32});
  EXPECT_TRUE(bitwise_equal(g32, f32));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "model.layers.0.mlp.up_proj.weight", at::kHalf), f16));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "model.norm.weight", at::kBFloat16, {33}), bf16));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "scale", at::kFloat), scalar));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "empty", at::kHalf, {0, 4}), empty));
  EXPECT_TRUE(
      bitwise_equal(load_weight(set, "transposed", at::kFloat, {6, 4}), transposed.contiguous()));

  // Conversions on load match torch's own.
  EXPECT_TRUE(
      bitwise_equal(load_weight(set, "model.norm.weight", at::kFloat), bf16.to(at::kFloat)));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "model.layers.0.mlp.up_proj.weight", at::kBFloat16),
                            f16.to(at::kBFloat16)));
  EXPECT_TRUE(bitwise_equal(load_weight(set, "model.layers.0.self_attn.q_proj.weight", at::kHalf),
                            f32.to(at::kHalf)));

  // The loaded tensor owns its memory: it survives the set.
  at::Tensor kept;
  {
    SafetensorsSet set2(dir.str());
    kept = load_weight(set2, "model.norm.weight", at::kBFloat16);
  }
  EXPECT_TRUE(bitwise_equal(kept, bf16));
}

TEST(Weights, ShapeMismatchMessage) {
  WeightsTempDir dir;
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  save_weights(dir.file("model.safetensors"), {{name, at::zeros({64, 64})}});
  SafetensorsSet set(dir.str());
  try {
    load_weight(set, name, at::kFloat, {64, 32});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), dir.file("model.safetensors") + ": tensor '" + name +
                                         "' has shape [64,64], config.json implies [64,32]");
  }
  try {
    load_weight(set, "model.layers.1.self_attn.q_proj.weight", at::kFloat);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.str()), std::string::npos) << e.what();
  }
}

TEST(Weights, IntegerAndBoolSources) {
  WeightsTempDir dir;
  const uint8_t u8[] = {0, 1, 200, 255};
  const int8_t i8[] = {-128, -1, 0, 127};
  const int16_t i16[] = {-32768, -2, 3, 32767};
  const uint16_t u16[] = {0, 1, 40000, 65535};
  const int32_t i32[] = {-2147483647 - 1, -5, 6, 2147483647};
  const uint32_t u32[] = {0, 7, 3000000000u, 4294967295u};
  const int64_t i64[] = {-9, 0, 9, int64_t{1} << 40};
  const uint64_t u64[] = {0, 11, uint64_t{1} << 40, 12};
  const uint64_t u64_big[] = {uint64_t{1} << 63};
  const double f64[] = {0.5, -1.25, 1e100, 3.0};
  const uint8_t bools[] = {0, 1, 2, 0};  // non-canonical true byte
  write_safetensors(dir.file("model.safetensors"), {{"u8", StDtype::U8, {4}, u8},
                                                    {"i8", StDtype::I8, {4}, i8},
                                                    {"i16", StDtype::I16, {4}, i16},
                                                    {"u16", StDtype::U16, {2, 2}, u16},
                                                    {"i32", StDtype::I32, {4}, i32},
                                                    {"u32", StDtype::U32, {4}, u32},
                                                    {"i64", StDtype::I64, {4}, i64},
                                                    {"u64", StDtype::U64, {4}, u64},
                                                    {"u64_big", StDtype::U64, {1}, u64_big},
                                                    {"f64", StDtype::F64, {4}, f64},
                                                    {"bool", StDtype::BOOL, {4}, bools}});
  SafetensorsSet set(dir.str());
  auto as_double = [&](const char* name) {
    at::Tensor t = load_weight(set, name, at::kDouble);
    EXPECT_EQ(t.scalar_type(), at::kDouble);
    std::vector<double> v(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    return v;
  };
  EXPECT_EQ(as_double("u8"), (std::vector<double>{0, 1, 200, 255}));
  EXPECT_EQ(as_double("i8"), (std::vector<double>{-128, -1, 0, 127}));
  EXPECT_EQ(as_double("i16"), (std::vector<double>{-32768, -2, 3, 32767}));
  EXPECT_EQ(as_double("u16"), (std::vector<double>{0, 1, 40000, 65535}));
  EXPECT_EQ(as_double("i32"), (std::vector<double>{-2147483648.0, -5, 6, 2147483647}));
  EXPECT_EQ(as_double("u32"), (std::vector<double>{0, 7, 3000000000.0, 4294967295.0}));
  EXPECT_EQ(as_double("i64"), (std::vector<double>{-9, 0, 9, 1099511627776.0}));
  EXPECT_EQ(as_double("u64"), (std::vector<double>{0, 11, 1099511627776.0, 12}));
  EXPECT_EQ(as_double("f64"), (std::vector<double>{0.5, -1.25, 1e100, 3.0}));
  EXPECT_EQ(as_double("bool"), (std::vector<double>{0, 1, 1, 0}));
  EXPECT_EQ(load_weight(set, "u16", at::kInt, {2, 2}).sizes().vec(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(load_weight(set, "bool", at::kBool).scalar_type(), at::kBool);
  EXPECT_THROW(load_weight(set, "u64_big", at::kFloat), InputError);

  // Integer tensors also save in their own dtype.
  save_weights(dir.file("ints.safetensors"),
               {{"a", at::arange(5, at::TensorOptions().dtype(at::kLong))},
                {"b", at::ones({2}, at::TensorOptions().dtype(at::kBool))}});
  SafetensorsFile f(dir.file("ints.safetensors"));
  EXPECT_EQ(f.find("a")->dtype, StDtype::I64);
  EXPECT_EQ(f.find("b")->dtype, StDtype::BOOL);
}

TEST(Weights, SaveRejectsUnsupported) {
  WeightsTempDir dir;
  EXPECT_THROW(save_weights(dir.file("x.safetensors"),
                            {{"c", at::zeros({2}, at::TensorOptions().dtype(at::kComplexFloat))}}),
               Error);
  EXPECT_THROW(save_weights(dir.file("x.safetensors"), {{"u", at::Tensor()}}), Error);
  EXPECT_THROW(
      save_weights(dir.file("x.safetensors"), {{"a", at::zeros({1})}, {"a", at::zeros({1})}}),
      Error);
  EXPECT_FALSE(fs::exists(dir.file("x.safetensors")));
}

}  // namespace
}  // namespace kvb
