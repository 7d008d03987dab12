// A JSON Schema validator for the subset suite configs use (draft 2020-12 keywords):
//   type, properties, required, additionalProperties, items, minItems, maxItems, uniqueItems,
//   enum, const, minimum, maximum, exclusiveMinimum, minLength, pattern, $ref ("#/$defs/..."),
//   allOf, anyOf, if/then/else. Annotations (title, description, default, $schema, $id,
//   examples, $comment) are ignored.
// The first violation is reported as "<json path>: <problem>", e.g. "$.methods[2]: expected a
// string"; anyOf reports the errors of the branch whose type fits the value, when one does.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kvb {

// The first violation of `schema` by `value`, or nullopt when valid. kvb::Error when the schema
// itself uses a keyword outside the subset (so a typo in schema.json is not silently ignored).
std::optional<std::string> validate_json_schema(const nlohmann::json& schema,
                                                const nlohmann::json& value);

// "$.a.b[2]" paths: appends a key ("." + key, or ["key"] when not an identifier) or an index.
std::string json_path_key(const std::string& path, const std::string& key);
std::string json_path_index(const std::string& path, size_t i);

}  // namespace kvb
