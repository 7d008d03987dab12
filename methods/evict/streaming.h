// `streaming(sink=4, window=N)`: StreamingLLM (Xiao et al. 2023). Keeps the first `sink` tokens
// (attention sinks) and the `window` most recent ones; everything in between is evicted as it
// leaves the window. Keys keep the RoPE of their original positions (no position re-assignment).
#pragma once

#include "methods/chain.h"

namespace kvb {

class StreamingSelector : public SelectorMethod {
 public:
  StreamingSelector(int64_t sink, int64_t window) : sink_(sink), window_(window) {}
  std::string spec() const override;
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override;
  int64_t promised_slots(int64_t tokens) const override { return std::min(tokens, sink_ + window_); }

 private:
  int64_t sink_, window_;
};

}  // namespace kvb
