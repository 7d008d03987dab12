// Layering probe (built by tests/layering/check_probes.cmake, not by `all`): compiled as a file of
// the methods layer, it includes a header of a higher layer (suites) and must fail to build.
#include "suites/runner.h"

namespace kvb {
int layering_probe_upward() { return 0; }
}  // namespace kvb
