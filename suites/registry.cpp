#include "suites/registry.h"

#include "suites/niah.h"
#include "suites/perplexity.h"
#include "suites/scbench.h"

namespace kvb {

const std::vector<const Suite*>& suite_registry() {
  static const std::vector<const Suite*> suites = {
      &perplexity_suite(),
      &niah_suite(),
      &scbench_suite(),
  };
  return suites;
}

const Suite* find_suite(const std::string& name) {
  for (const Suite* s : suite_registry())
    if (s->name() == name) return s;
  return nullptr;
}

std::string suite_names() {
  std::string s;
  for (const Suite* x : suite_registry()) s += (s.empty() ? "" : ", ") + x->name();
  return s;
}

}  // namespace kvb
