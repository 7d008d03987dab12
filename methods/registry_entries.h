// The registry entries, each defined in its method's own file; methods/registry.cpp lists them.
#pragma once

#include "methods/registry.h"

namespace kvb {

MethodEntry full_entry();       // methods/quant/full.cpp
MethodEntry int_entry();        // methods/quant/int_quant.cpp
MethodEntry kivi_entry();       // methods/quant/kivi.cpp
MethodEntry streaming_entry();  // methods/evict/streaming.cpp
MethodEntry h2o_entry();        // methods/evict/h2o.cpp
MethodEntry snapkv_entry();     // methods/evict/snapkv.cpp
MethodEntry knorm_entry();      // methods/evict/knorm.cpp
MethodEntry random_entry();     // methods/evict/random.cpp

}  // namespace kvb
