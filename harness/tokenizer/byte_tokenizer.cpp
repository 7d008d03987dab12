// The byte tokenizer of the models kvbench trains itself: ids 0..255 are the bytes, then BOS and
// EOS.
#include <cstdio>

#include "common/check.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvb {
namespace {

constexpr int32_t kByteBos = 256;
constexpr int32_t kByteEos = 257;

class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(int32_t vocab_size) : vocab_size_(vocab_size) {}

  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 1);
    if (add_special) ids.push_back(kByteBos);
    for (char c : text) ids.push_back(static_cast<uint8_t>(c));
    return ids;
  }

  // Ids >= 256: skipped with skip_special, else BOS / EOS render as "<s>" / "</s>" and any
  // other id past EOS is dropped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    out.reserve(ids.size());
    for (int32_t id : ids) {
      if (id >= 0 && id < 256) {
        out.push_back(static_cast<char>(id));
      } else if (!skip_special && id == kByteBos) {
        out += "<s>";
      } else if (!skip_special && id == kByteEos) {
        out += "</s>";
      }
    }
    return out;
  }

  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_id() const override { return kByteBos; }
  std::optional<int32_t> eos_id() const override { return kByteEos; }

  std::string id_to_token(int32_t id) const override {
    KVB_CHECK(id >= 0 && id < vocab_size_, "token id ", id, " is not in the vocabulary");
    if (id == kByteBos) return "<s>";
    if (id == kByteEos) return "</s>";
    if (id > kByteEos) return "<unused" + std::to_string(id) + ">";
    if (id >= 0x20 && id < 0x7F) return std::string(1, static_cast<char>(id));
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", id);
    return buf;
  }

 private:
  int32_t vocab_size_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer(int32_t vocab_size) {
  KVB_INPUT_CHECK(vocab_size >= 258, "byte tokenizer: vocab_size ", vocab_size,
                  " is below 258 (256 bytes + BOS + EOS)");
  return std::make_unique<ByteTokenizer>(vocab_size);
}

}  // namespace kvb
