#include "harness/tokenizer/decoders.h"

#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/pcre_regex.h"
#include "harness/tokenizer/utf8.h"

namespace kvb::tok {
namespace {

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::string text = byte_level::decode_tokens(*tokens);
    tokens->assign(1, std::move(text));
  }
};

// Replaces the matches of a pattern in every token.
class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const std::string& pattern, bool literal, std::string content,
                 const std::string& context)
      : regex_(pattern, literal, context), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      const auto matches = regex_.find_all(t);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, prev, b - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  PcreRegex regex_;
  std::string content_;
};

// Runs of "<0xNN>" tokens become the text of their bytes; a run that is not valid UTF-8 becomes
// one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string bytes;
    const auto flush = [&] {
      if (bytes.empty()) return;
      if (utf8::is_valid(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (std::string& t : *tokens) {
      int value = -1;
      if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>')
        value = parse_hex_byte(t[3], t[4]);
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse_hex_byte(char hi, char lo) {
    const int h = hex_digit(hi), l = hex_digit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of the character `content` from
// every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      size_t begin = 0, end = t.size();
      for (size_t i = 0; i < start_ && t.compare(begin, content_.size(), content_) == 0; ++i) {
        begin += content_.size();
      }
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         t.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;  // one character (UTF-8)
  size_t start_, stop_;
};

// Strip's start / stop: how many copies of the character to remove (at most 2^20).
size_t count_field(const JsonNode& j, const std::string& key) {
  return static_cast<size_t>(j.integer(key, 0, 0, int64_t{1} << 20));
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const std::optional<JsonNode>& node) {
  if (!node) return nullptr;
  const JsonNode& j = node->object();
  const JsonNode type_node = j.at("type");
  const std::string type = type_node.str();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const JsonNode& item : j.at("decoders").array().items()) {
      item.object();
      steps.push_back(make_decoder(item));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    bool literal = false;
    const std::string pattern = read_pattern(j, &literal);
    return std::make_unique<ReplaceDecoder>(pattern, literal, j.at("content").str(),
                                            context_of(j.at("pattern")));
  }
  if (type == "Strip") {
    const JsonNode content_node = j.at("content");
    const std::string content = content_node.str();
    size_t len = 0;
    if (content.empty() || !utf8::is_valid(content) ||
        (utf8::decode_at(content, 0, &len), len != content.size())) {
      content_node.expected("one character");
    }
    return std::make_unique<StripDecoder>(content, count_field(j, "start"), count_field(j, "stop"));
  }
  type_not_supported(type_node, type,
                     {"ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Sequence"});
}

}  // namespace kvb::tok
