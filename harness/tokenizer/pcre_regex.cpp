#include "harness/tokenizer/pcre_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "common/check.h"

namespace kvb::tok {
namespace {

pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

}  // namespace

PcreRegex::PcreRegex(const std::string& pattern, bool literal, const std::string& context)
    : where_(context) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(error, buf, sizeof(buf));
    throw InputError(context + ": cannot compile regex at offset " + std::to_string(offset) + ": " +
                     reinterpret_cast<const char*>(buf));
  }
  pcre2_jit_compile(code,
                    PCRE2_JIT_COMPLETE);  // optional: pcre2_match falls back to the interpreter
  code_ = code;
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  if (mc == nullptr) {
    pcre2_code_free(code);
    throw Error("pcre2_match_context_create failed");
  }
  pcre2_set_match_limit(mc, kMatchLimit);
  pcre2_set_depth_limit(mc, kMatchLimit);
  context_ = mc;
}

PcreRegex::~PcreRegex() {
  pcre2_match_context_free(static_cast<pcre2_match_context*>(context_));
  pcre2_code_free(as_code(code_));
}

int PcreRegex::match(std::string_view text, size_t start, uint32_t options,
                     void* match_data) const {
  const int rc =
      pcre2_match(as_code(code_), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                  options | PCRE2_NO_UTF_CHECK, static_cast<pcre2_match_data*>(match_data),
                  static_cast<pcre2_match_context*>(context_));
  if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH || rc == PCRE2_ERROR_PARTIAL) return rc;
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(rc, buf, sizeof(buf));
  throw InputError(where_ + ": the regex cannot be matched against a text of " +
                   std::to_string(text.size()) + " bytes: " + reinterpret_cast<const char*>(buf) +
                   " (limit " + std::to_string(kMatchLimit) + " steps)");
}

std::vector<std::pair<size_t, size_t>> PcreRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  MatchData md(pcre2_match_data_create_from_pattern(as_code(code_), nullptr));
  KVB_CHECK(md != nullptr, "pcre2_match_data_create_from_pattern failed");
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = match(text, start, 0, md.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    KVB_CHECK(rc > 0, "pcre2_match failed with code ", rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    // \K in a lookaround can report a match that ends before it starts or before `start`.
    if (ov[0] < start || ov[1] < ov[0] || ov[1] > text.size()) {
      throw InputError(where_ + ": the regex reports a match [" + std::to_string(ov[0]) + ", " +
                       std::to_string(ov[1]) + ") outside the text searched from " +
                       std::to_string(start) + " (\\K in a lookaround is not supported)");
    }
    out.emplace_back(ov[0], ov[1]);
    if (ov[1] > ov[0]) {
      start = ov[1];
    } else {  // empty match: step over one whole character
      if (ov[1] >= text.size()) break;
      start = ov[1] + 1;
      while (start < text.size() && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
  return out;
}

bool PcreRegex::matches_at_start(std::string_view text) const {
  MatchData md(pcre2_match_data_create_from_pattern(as_code(code_), nullptr));
  KVB_CHECK(md != nullptr, "pcre2_match_data_create_from_pattern failed");
  return match(text, 0, PCRE2_ANCHORED, md.get()) > 0;
}

}  // namespace kvb::tok
