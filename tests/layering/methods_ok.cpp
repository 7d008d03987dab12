// Layering probe (built by tests/layering/check_probes.cmake, not by `all`): compiled as a file of
// the methods layer, it includes a lower layer's header and must build.
#include "common/hash.h"

namespace kvb {
uint64_t layering_probe_ok() { return fnv1a64("methods may include common"); }
}  // namespace kvb
