#include "harness/tokenizer/post_processor.h"

namespace kvb::tok {
namespace {

std::vector<int32_t> read_ids(const nlohmann::json& arr, const std::string& name,
                              const JsonFields& f) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < arr.size(); ++i) {
    f.expect(arr[i], name + "[" + std::to_string(i) + "]", JsonKind::kInteger);
    ids.push_back(arr[i].get<int32_t>());
  }
  return ids;
}

// TemplateProcessing: the "single" template's SpecialToken items before/after Sequence "A".
SpecialIds read_template(const nlohmann::json& j, const std::string& where, const JsonFields& f) {
  const nlohmann::json& single = f.require(j, where, "single", JsonKind::kArray);
  const nlohmann::json* specials = f.optional(j, where, "special_tokens", JsonKind::kObject);
  SpecialIds out;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string name = where + ".single[" + std::to_string(i) + "]";
    const nlohmann::json& item = single[i];
    f.expect(item, name, JsonKind::kObject);
    if (const nlohmann::json* seq = f.optional(item, name, "Sequence", JsonKind::kObject)) {
      const std::string id = f.require_string(*seq, name + ".Sequence", "id");
      if (id != "A" || seen_sequence)
        f.fail(name + ": a single-sequence template holds one Sequence A");
      seen_sequence = true;
      continue;
    }
    const nlohmann::json& tok = f.require(item, name, "SpecialToken", JsonKind::kObject);
    const std::string id = f.require_string(tok, name + ".SpecialToken", "id");
    if (specials == nullptr || !specials->contains(id)) {
      f.fail(name + ": special token '" + id + "' is not in " + where + ".special_tokens");
    }
    const std::string sname = where + ".special_tokens[\"" + id + "\"]";
    const nlohmann::json& entry = (*specials)[id];
    f.expect(entry, sname, JsonKind::kObject);
    std::vector<int32_t> ids =
        read_ids(f.require(entry, sname, "ids", JsonKind::kArray), sname + ".ids", f);
    auto& dst = seen_sequence ? out.suffix : out.prefix;
    dst.insert(dst.end(), ids.begin(), ids.end());
  }
  if (!seen_sequence) f.fail(where + ".single has no Sequence A");
  return out;
}

// RobertaProcessing / BertProcessing: "cls": [token, id] first, "sep": [token, id] last.
int32_t read_token_pair_id(const nlohmann::json& j, const std::string& where,
                           const std::string& key, const JsonFields& f) {
  const nlohmann::json& pair = f.require(j, where, key, JsonKind::kArray);
  const std::string name = JsonFields::join(where, key);
  if (pair.size() != 2 || !pair[1].is_number_integer()) {
    f.fail("field '" + name + "' must be a [token, id] pair");
  }
  return pair[1].get<int32_t>();
}

}  // namespace

SpecialIds read_post_processor(const nlohmann::json& j, const std::string& where,
                               const JsonFields& f) {
  if (j.is_null()) return {};
  f.expect(j, where, JsonKind::kObject);
  const std::string type = f.require_string(j, where, "type");
  if (type == "ByteLevel") return {};  // only adjusts offsets
  if (type == "TemplateProcessing") return read_template(j, where, f);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return SpecialIds{{read_token_pair_id(j, where, "cls", f)},
                      {read_token_pair_id(j, where, "sep", f)}};
  }
  if (type == "Sequence") {
    const nlohmann::json& list = f.require(j, where, "processors", JsonKind::kArray);
    SpecialIds out;
    for (size_t i = 0; i < list.size(); ++i) {
      // Each processor wraps what the previous ones produced.
      SpecialIds step =
          read_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]", f);
      out.prefix.insert(out.prefix.begin(), step.prefix.begin(), step.prefix.end());
      out.suffix.insert(out.suffix.end(), step.suffix.begin(), step.suffix.end());
    }
    return out;
  }
  f.fail(where + ".type '" + type +
         "' is not supported (TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, "
         "Sequence)");
}

}  // namespace kvb::tok
