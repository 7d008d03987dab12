#include "cli/kv_stats_cmd.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/engine/kv_stats.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "results/svg_chart.h"

namespace kvb::cli {
namespace {

namespace fs = std::filesystem;

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// An output path we can write: its folder exists and it is not a folder itself. Checked before
// any work, so a typo fails in one line instead of after the model ran.
void check_output(const std::string& path, const char* flag) {
  if (path.empty()) return;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  KVB_INPUT_CHECK(fs::is_directory(dir, ec), path, ": cannot write ", flag, " output (no folder ",
                  dir.string(), ")");
  KVB_INPUT_CHECK(!fs::is_directory(p, ec), path, ": cannot write ", flag,
                  " output (it is a folder)");
}

struct Source {
  std::string model_dir, text;
};

nlohmann::ordered_json channel_json(const ChannelStats& s) {
  return {{"max_absmax", s.max_absmax},
          {"median_absmax", s.median_absmax},
          {"ratio", s.ratio},
          {"outlier_channels", s.outlier_channels},
          {"outlier_entries", s.outlier_entries},
          {"mean_abs", s.mean_abs},
          {"max_abs", s.max_abs}};
}

std::string to_json(const KVStats& st, const Source& src) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (size_t l = 0; l < st.layers.size(); ++l) {
    nlohmann::ordered_json heads = nlohmann::ordered_json::array();
    for (size_t h = 0; h < st.layers[l].size(); ++h) {
      const HeadKVStats& hs = st.layers[l][h];
      heads.push_back({{"head", h},
                       {"key_pre_rope", channel_json(hs.key_pre_rope)},
                       {"key_post_rope", channel_json(hs.key_post_rope)},
                       {"value", channel_json(hs.value)},
                       {"sink_mass", hs.sink_mass},
                       {"sink_mass_per_query_head", hs.sink_mass_q}});
    }
    layers.push_back({{"layer", l}, {"heads", heads}});
  }
  nlohmann::ordered_json j{{"model", src.model_dir},
                           {"text", src.text},
                           {"tokens", st.tokens},
                           {"first_token", st.first_token},
                           {"n_layers", st.shape.n_layers},
                           {"n_head_q", st.shape.n_head_q},
                           {"n_kv_heads", st.shape.n_head_kv},
                           {"head_dim", st.shape.head_dim},
                           {"chunk", st.options.chunk},
                           {"outlier_factor", st.options.outlier_factor},
                           {"sink_from", st.sink_from},
                           {"sink_uniform", st.sink_uniform},
                           {"layers", layers}};
  return j.dump(1) + "\n";
}

std::string summary_line(const KVStats& st, const Source& src) {
  return src.model_dir + ", text " + src.text + ": " + std::to_string(st.tokens) +
         " tokens (first token id " + std::to_string(st.first_token) + "), " +
         std::to_string(st.shape.n_layers) + " layers x " + std::to_string(st.shape.n_head_kv) +
         " KV heads x head_dim " + std::to_string(st.shape.head_dim);
}

std::string definitions_line(const KVStats& st) {
  return "absmax: a channel's max |x| over the tokens; ratio: max / median channel absmax of the "
         "head; out: channels with absmax > " +
         fmt("%g", st.options.outlier_factor) +
         " x the median; sink: mean attention weight on the first token of the queries at "
         "positions >= " +
         std::to_string(st.sink_from) + " (attention spread evenly would give " +
         fmt("%.4f", st.sink_uniform) + ")";
}

struct Column {
  const char* name;
  const ChannelStats& (*get)(const HeadKVStats&);
};
const Column kColumns[] = {
    {"key pre-RoPE", [](const HeadKVStats& h) -> const ChannelStats& { return h.key_pre_rope; }},
    {"key post-RoPE", [](const HeadKVStats& h) -> const ChannelStats& { return h.key_post_rope; }},
    {"value", [](const HeadKVStats& h) -> const ChannelStats& { return h.value; }},
};

std::string text_table(const KVStats& st, const Source& src) {
  std::string t = "kv-stats: " + summary_line(st, src) + "\n" + definitions_line(st) + "\n\n";
  char b[256];
  std::snprintf(b, sizeof b, "%5s %4s |", "", "");
  t += b;
  for (const Column& c : kColumns) {
    std::snprintf(b, sizeof b, " %-30s |", c.name);
    t += b;
  }
  t += "\n";
  std::snprintf(b, sizeof b, "%5s %4s |", "layer", "head");
  t += b;
  for (size_t i = 0; i < 3; ++i) {
    std::snprintf(b, sizeof b, " %8s %8s %7s %4s |", "absmax", "median", "ratio", "out");
    t += b;
  }
  t += "    sink\n";
  for (size_t l = 0; l < st.layers.size(); ++l)
    for (size_t h = 0; h < st.layers[l].size(); ++h) {
      const HeadKVStats& hs = st.layers[l][h];
      std::snprintf(b, sizeof b, "%5zu %4zu |", l, h);
      t += b;
      for (const Column& c : kColumns) {
        const ChannelStats& s = c.get(hs);
        std::snprintf(b, sizeof b, " %8.3g %8.3g %7.2f %4zu |", s.max_absmax, s.median_absmax,
                      s.ratio, s.outlier_channels.size());
        t += b;
      }
      std::snprintf(b, sizeof b, " %7.4f\n", hs.sink_mass);
      t += b;
    }
  return t;
}

std::string channel_list(const std::vector<int64_t>& cs) {
  std::string r;
  for (int64_t c : cs) r += (r.empty() ? "" : " ") + std::to_string(c);
  return r.empty() ? "–" : r;
}

std::string html_page(const KVStats& st, const Source& src) {
  using svg::escape;
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>kv-stats: " +
      escape(src.model_dir) +
      "</title>\n<style>\n"
      "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\n"
      "table{border-collapse:collapse;font-size:13px}\n"
      "th,td{border:1px solid #ccc;padding:3px 7px}td.n{text-align:right}\n"
      "th{background:#f3f3f3}\n"
      ".kvb-chart text{font-size:11px;fill:#333}.kvb-grid{stroke:#e6e6e6}\n"
      ".kvb-frame{stroke:#999}.kvb-series{stroke-width:1.5}\n"
      "</style>\n</head>\n<body>\n<h1>kv-stats</h1>\n<p>" +
      escape(summary_line(st, src)) + ".</p>\n<p>" + escape(definitions_line(st)) +
      ". Outlier channels are listed by index within the head.</p>\n"
      "<table id=\"kv-stats\">\n<thead><tr><th rowspan=\"2\">layer</th><th rowspan=\"2\">KV "
      "head</th>";
  for (const Column& c : kColumns) h += "<th colspan=\"4\">" + escape(c.name) + "</th>";
  h += "<th rowspan=\"2\">sink mass</th></tr>\n<tr>";
  for (size_t i = 0; i < 3; ++i)
    h += "<th>absmax</th><th>median</th><th>ratio</th><th>outlier channels</th>";
  h += "</tr></thead>\n<tbody>\n";
  for (size_t l = 0; l < st.layers.size(); ++l)
    for (size_t hd = 0; hd < st.layers[l].size(); ++hd) {
      const HeadKVStats& hs = st.layers[l][hd];
      h += "<tr><td class=\"n\">" + std::to_string(l) + "</td><td class=\"n\">" +
           std::to_string(hd) + "</td>";
      for (const Column& c : kColumns) {
        const ChannelStats& s = c.get(hs);
        h += "<td class=\"n\">" + fmt("%.4g", s.max_absmax) + "</td><td class=\"n\">" +
             fmt("%.4g", s.median_absmax) + "</td><td class=\"n\">" + fmt("%.2f", s.ratio) +
             "</td><td>" + escape(channel_list(s.outlier_channels)) + "</td>";
      }
      h += "<td class=\"n\">" + fmt("%.4f", hs.sink_mass) + "</td></tr>\n";
    }
  h += "</tbody>\n</table>\n";
  const int64_t D = st.shape.head_dim;
  for (size_t l = 0; l < st.layers.size(); ++l) {
    h += "<h2>Layer " + std::to_string(l) +
         "</h2>\n<p>Channel absmax, KV heads side by side: x = " + "head &#215; " +
         std::to_string(D) + " + channel + 1.</p>\n";
    std::vector<svg::Series> series;
    for (size_t i = 0; i < 3; ++i) {
      svg::Series s{kColumns[i].name, i, {}};
      for (size_t hd = 0; hd < st.layers[l].size(); ++hd) {
        const ChannelStats& cs = kColumns[i].get(st.layers[l][hd]);
        for (size_t c = 0; c < cs.max_abs.size(); ++c)
          s.points.push_back(
              {static_cast<double>(static_cast<int64_t>(hd) * D + static_cast<int64_t>(c) + 1),
               cs.max_abs[c]});
      }
      series.push_back(std::move(s));
    }
    svg::Labels labels;
    labels.title = "Layer " + std::to_string(l) + ": per-channel absmax of keys and values";
    labels.x = "head*" + std::to_string(D) + " + channel + 1";
    labels.y = "channel absmax";
    h += svg::line_chart({{"data-chart", "kv-channels"}, {"data-layer", std::to_string(l)}}, labels,
                         series);
  }
  return h + "</body>\n</html>\n";
}

}  // namespace

int run_kv_stats(const KVStatsArgs& a) {
  KVB_INPUT_CHECK(a.max_tokens >= 0, "--max-tokens ", a.max_tokens, ": must be positive");
  KVB_INPUT_CHECK(a.sink_skip >= 0, "--sink-skip ", a.sink_skip, ": must not be negative");
  KVB_INPUT_CHECK(a.outlier_factor > 0, "--outlier-factor ", a.outlier_factor,
                  ": must be positive");
  check_output(a.json, "--json");
  check_output(a.html, "--html");
  // The text first: a missing or empty file fails before the model is read.
  std::error_code ec;
  KVB_INPUT_CHECK(!fs::is_directory(a.text, ec), a.text, ": is a folder, not a text file");
  const std::string text = read_file(a.text);
  KVB_INPUT_CHECK(!text.empty(), a.text, ": empty text");
  Model model = Model::load(a.model_dir);
  const std::string tok_path = (fs::path(a.model_dir) / "tokenizer.json").string();
  auto tok = load_tokenizer(tok_path);
  // What the tokenizer adds to any text (BOS): a text giving no more than that has no tokens.
  const size_t specials = tok->encode("", true).size();
  std::vector<int64_t> ids;
  for (int32_t id : tok->encode(text, true)) ids.push_back(id);
  KVB_INPUT_CHECK(ids.size() > specials, a.text, ": the text encodes to no tokens");
  KVStatsOptions opt;
  opt.max_tokens = a.max_tokens;
  opt.sink_skip = a.sink_skip;
  opt.outlier_factor = a.outlier_factor;
  const KVStats st = compute_kv_stats(model, ids, opt);
  const Source src{a.model_dir, a.text};
  // Everything is rendered before anything is written.
  const std::string json = a.json.empty() ? "" : to_json(st, src);
  const std::string html = a.html.empty() ? "" : html_page(st, src);
  if (!a.json.empty()) write_file(a.json, json);
  if (!a.html.empty()) write_file(a.html, html);
  std::cout << text_table(st, src) << std::flush;
  return 0;
}

}  // namespace kvb::cli
