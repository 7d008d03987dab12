// What DuoAttention and RazorAttention share (methods/evict/duoattention.cpp,
// methods/evict/razorattention.cpp): every KV head of every layer has a role, retrieval (keeps
// every token) or streaming (keeps the first `sink` and the `recent` latest tokens, evicting as
// StreamingLLM does, per head, as tokens arrive); the roles come from a calibration cached on disk
// or from an explicit `roles=` pattern.
//
// Roles, layer-major over the model's n_layers x n_head_kv KV heads (index layer * n_head_kv +
// head):
//   roles=calibrated   from the method's calibration artifact (KVMethod::calibrate); a state
//                      cannot be made before it (kvb::InputError naming the remedy).
//   roles=<r|s>...     a pattern of 'r' (retrieval) and 's' (streaming) repeated over the heads:
//                      roles=r keeps everything, roles=s is streaming in every head, roles=rs
//                      alternates (tests, ablations; at most 256 characters).
//
// Artifacts: <cache_dir>/<method>/<model_id>-<FNV-1a 64 of the stage's canonical spec>.json,
// holding the method, spec, model id, shape, roles as a pattern of the model's length and the
// per-head scores. A file that matches (method, spec, model, shape, role count) is read and
// nothing is computed; otherwise the calibration runs and (re)writes it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "methods/chain.h"

namespace kvb {

// "calibrated", or a valid r/s pattern; else the reason it is not.
std::optional<std::string> roles_problem(const std::string& roles);
// The pattern tiled over `n` heads: true = streaming.
std::vector<uint8_t> roles_from_pattern(const std::string& pattern, int64_t n);
// Streaming heads a pattern gives over `n` heads.
int64_t streaming_in_pattern(const std::string& pattern, int64_t n);
std::string roles_to_pattern(const std::vector<uint8_t>& streaming);

// The selector both methods are: roles, sink, recent; compensation for RazorAttention.
class HeadwiseSelector : public SelectorMethod {
 public:
  HeadwiseSelector(const StageSpec& stage, bool compensate);
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override;
  bool ragged_heads() const override { return true; }
  bool compensates_dropped() const override { return compensate_; }
  // The most a head keeps (a retrieval head's count); the real promise is promised_ragged().
  int64_t promised_slots(int64_t tokens, int64_t prompt) const override { return tokens; }
  RaggedPromise promised_ragged(const ModelShape& shape, int64_t tokens,
                                int64_t prompt) const override;
  std::optional<CalibrationArtifact> calibration_artifact() const override { return artifact_; }

  // Streaming heads on `shape`: from the pattern, or the method's count for calibrated roles.
  int64_t streaming_heads(const ModelShape& shape) const;
  int64_t sink() const { return sink_; }
  int64_t recent() const { return recent_; }
  const std::string& roles_param() const { return roles_param_; }
  // The roles in use (layer-major, true = streaming); empty when calibrated roles are missing.
  const std::vector<uint8_t>& roles() const { return roles_; }

 protected:
  // How many KV heads stream when roles are calibrated (DuoAttention: round(sparsity x heads);
  // RazorAttention: heads - round(heads_fraction x heads)).
  virtual int64_t calibrated_streaming(int64_t total_heads) const = 0;
  // A copy of this selector with explicit roles (calibration candidates and results).
  virtual std::shared_ptr<HeadwiseSelector> copy() const = 0;

  // Calibration plumbing for subclasses: the artifact's path for ctx, a cached artifact that
  // matches (nullopt: none, or a stale one), and writing one. `body` holds the method-specific
  // fields besides the common ones (method, spec, model_id, n_layers, n_head_kv, roles).
  std::string artifact_path(const CalibrationContext& ctx) const;
  std::optional<std::vector<uint8_t>> read_artifact(const CalibrationContext& ctx,
                                                    const std::string& path) const;
  std::shared_ptr<const SelectorMethod> with_artifact(std::vector<uint8_t> roles,
                                                      const std::string& path,
                                                      bool computed) const;
  void write_artifact(const CalibrationContext& ctx, const std::string& path,
                      const std::vector<uint8_t>& roles, nlohmann::json body) const;
  std::shared_ptr<HeadwiseSelector> with_roles(std::vector<uint8_t> roles) const;

 private:
  int64_t sink_, recent_;
  bool compensate_;
  std::string roles_param_;
  std::vector<uint8_t> roles_;  // layer-major, true = streaming; from the pattern or calibrated
  std::optional<CalibrationArtifact> artifact_;
};

// The log-likelihood ctx.run gives `ids[from, n)` (each predicted by the row before it).
double answer_log_likelihood(const torch::Tensor& logits,  // [n, V] fp32
                             const std::vector<int64_t>& ids, int64_t from);

}  // namespace kvb
