#include "harness/tokenizer/post_processor.h"

#include "common/error_text.h"
#include "harness/tokenizer/bpe_model.h"

namespace kvb::tok {
namespace {

int32_t token_id(const JsonNode& v) { return static_cast<int32_t>(v.integer(0, kMaxTokenIds - 1)); }

// A template item's Sequence or SpecialToken object: an object whose type_id, when given, is a
// u32 (as HF's Piece has it).
void check_piece(const JsonNode& piece) {
  piece.object();
  piece.integer("type_id", 0, 0, 0xFFFFFFFFll);
}

// TemplateProcessing: the "single" template's SpecialToken items before/after Sequence "A".
SpecialIds read_template(const JsonNode& j) {
  const JsonNode single = j.at("single");
  const auto specials = j.find("special_tokens");
  if (specials) {
    // Every entry as HF reads it: {"id": string, "ids": [u32], "tokens": [string]}.
    for (const auto& [name, entry] : specials->members()) {
      entry.object();
      entry.at("id").str();
      for (const JsonNode& v : entry.at("ids").array().items()) token_id(v);
      if (auto tokens = entry.find("tokens")) tokens->strings();
    }
  }
  SpecialIds out;
  bool seen_sequence = false;
  for (const JsonNode& item : single.array().items()) {
    item.object();
    if (const auto seq = item.find("Sequence")) {
      check_piece(*seq);
      const std::string id = seq->at("id").str();
      if (id != "A" || seen_sequence) item.fail("a single-sequence template holds one Sequence A");
      seen_sequence = true;
      continue;
    }
    const JsonNode tok = item.at("SpecialToken");
    check_piece(tok);
    const std::string id = tok.at("id").str();
    const auto entry = specials ? specials->find(id) : std::nullopt;
    if (!entry) {
      tok.at("id").fail("special token " + quote_input(id) + " is not in " +
                        (specials ? specials->where() : j.where() + ".special_tokens"));
    }
    entry->object();
    auto& dst = seen_sequence ? out.suffix : out.prefix;
    for (const JsonNode& v : entry->at("ids").array().items()) dst.push_back(token_id(v));
  }
  if (!seen_sequence) single.fail("has no Sequence A");
  // The pair template is not used (kvbench encodes single texts), but it is checked as HF
  // checks it when loading: Sequence A / B and known special tokens.
  if (const auto pair = j.find("pair")) {
    for (const JsonNode& item : pair->array().items()) {
      item.object();
      if (const auto seq = item.find("Sequence")) {
        check_piece(*seq);
        const JsonNode id = seq->at("id");
        if (id.str() != "A" && id.str() != "B") id.expected("\"A\" or \"B\"");
        continue;
      }
      const JsonNode tok = item.at("SpecialToken");
      check_piece(tok);
      const std::string id = tok.at("id").str();
      if (!specials || !specials->has(id)) {
        tok.at("id").fail("special token " + quote_input(id) + " is not in " +
                          (specials ? specials->where() : j.where() + ".special_tokens"));
      }
    }
  }
  return out;
}

// RobertaProcessing / BertProcessing: "cls": [token, id] first, "sep": [token, id] last.
int32_t read_token_pair_id(const JsonNode& j, const std::string& key) {
  const JsonNode pair = j.at(key);
  if (!pair.is_array() || pair.size() != 2) pair.expected("a [token, id] pair");
  return token_id(pair[1]);
}

}  // namespace

SpecialIds read_post_processor(const std::optional<JsonNode>& node) {
  if (!node) return {};
  const JsonNode& j = node->object();
  const JsonNode type_node = j.at("type");
  const std::string type = type_node.str();
  if (type == "ByteLevel") return {};  // only adjusts offsets
  if (type == "TemplateProcessing") return read_template(j);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return SpecialIds{{read_token_pair_id(j, "cls")}, {read_token_pair_id(j, "sep")}};
  }
  if (type == "Sequence") {
    SpecialIds out;
    for (const JsonNode& item : j.at("processors").array().items()) {
      // Each processor wraps what the previous ones produced.
      SpecialIds step = read_post_processor(item);
      out.prefix.insert(out.prefix.begin(), step.prefix.begin(), step.prefix.end());
      out.suffix.insert(out.suffix.end(), step.suffix.begin(), step.suffix.end());
    }
    return out;
  }
  type_not_supported(
      type_node, type,
      {"TemplateProcessing", "ByteLevel", "RobertaProcessing", "BertProcessing", "Sequence"});
}

}  // namespace kvb::tok
