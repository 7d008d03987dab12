// Error lines as the user sees them: exactly one line, control characters escaped, long values
// cut. Every command's error goes through `one_line` before it is printed; a value taken from
// an input (a string from a file, a spec argument) goes through `quote_input` before it is embedded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvb {

// `text` with control characters (and DEL, and bytes that are not valid UTF-8) escaped as \n,
// \t, \r or \xNN, and cut to at most `max_chars` bytes with "..." appended when cut.
std::string one_line(std::string_view text, std::size_t max_chars = 1000);
// A value from an input, for a message: "\"" + one_line(value, 200) + "\"".
std::string quote_input(std::string_view value, std::size_t max_chars = 200);

}  // namespace kvb
