// Error handling shared by every part of kvbench.
//
// Library code never exits: it throws. Two kinds of error exist:
//   - InputError: the user handed us something malformed (model file, config, spec, dataset).
//     The CLI prints one line and exits with code 2.
//   - Error: anything else (an invariant broke). The CLI prints one line and exits with code 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace kvb {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Malformed input. `what()` is one line naming the file (or spec) and the problem.
class InputError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace kvb

// Invariant check: throws kvb::Error with file:line context.
#define KVB_CHECK(cond, ...)                                                             \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      throw ::kvb::Error(::kvb::detail::concat(__FILE__, ":", __LINE__, ": check failed: ", \
                                               #cond, ": ", __VA_ARGS__));               \
    }                                                                                    \
  } while (0)

// Input check: throws kvb::InputError with the message only (it is shown to the user).
#define KVB_INPUT_CHECK(cond, ...)                                        \
  do {                                                                    \
    if (!(cond)) throw ::kvb::InputError(::kvb::detail::concat(__VA_ARGS__)); \
  } while (0)
