// tokenizer.json helpers on top of the one JSON reading layer (common/json_reader.h): every
// section of a tokenizer.json is read through kvb::JsonNode, whose errors name the file, the
// field's path and what was expected ("<path>: model.vocab: expected an object, got an array").
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/json_reader.h"

namespace kvb::tok {

// Reads node.pattern, a {"String": s} or {"Regex": r} object; *literal tells which it was.
std::string read_pattern(const JsonNode& node, bool* literal);

// Throws "<path>.type: \"X\" is not supported (a, b, c)" for a component type kvbench does not
// implement.
[[noreturn]] void type_not_supported(const JsonNode& type, std::string_view value,
                                     std::initializer_list<std::string_view> supported);

// "<file>: <where>" for messages from components built after reading (regex compilation).
inline std::string context_of(const JsonNode& node) { return node.source() + ": " + node.where(); }

}  // namespace kvb::tok
