#include "harness/tokenizer/json_fields.h"

#include "common/error_text.h"

namespace kvb::tok {

std::string read_pattern(const JsonNode& node, bool* literal) {
  const JsonNode p = node.at("pattern");
  p.object();
  if (auto s = p.find("String")) {
    *literal = true;
    return s->str();
  }
  if (auto r = p.find("Regex")) {
    *literal = false;
    return r->str();
  }
  p.expected("an object with \"String\" or \"Regex\"");
}

void type_not_supported(const JsonNode& type, std::string_view value,
                        std::initializer_list<std::string_view> supported) {
  std::string list;
  for (auto s : supported) list += (list.empty() ? "" : ", ") + std::string(s);
  type.fail(quote_input(value) + " is not supported (" + list + ")");
}

}  // namespace kvb::tok
