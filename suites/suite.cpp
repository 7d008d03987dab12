#include "suites/suite.h"

#include <cstdio>

namespace kvb {

std::string describe_dataset_kind(DatasetKind kind) {
  return kind == DatasetKind::kText ? "a text dataset (text, wikitext2, text_dir, prose)"
                                    : "a shared-context dataset (scbench_*, mixture)";
}

std::string format_number(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

}  // namespace kvb
