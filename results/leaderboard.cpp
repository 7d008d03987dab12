#include "results/leaderboard.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

#include "common/number_text.h"
#include "common/check.h"
#include "common/json_reader.h"
#include "methods/registry.h"
#include "suites/cell_record.h"
#include "results/compare.h"
#include "results/results_db.h"
#include "results/svg_chart.h"
#include "suites/registry.h"

namespace kvb {
namespace {

using json = nlohmann::json;

struct Cell {
  int64_t id = 0;
  std::string source;  // "<db>: cell <id>", for messages about its record
  std::string run, suite, dataset, model_path, model, method;
  json metrics;
  // metrics[name] read through the JSON layer: a malformed chart series is one line naming the
  // database, the cell and the path in its record.
  JsonNode metric_node(const std::string& name) const {
    return JsonNode(metrics, source, "metrics").at(name);
  }
  json params;  // the run's canonical params
  std::optional<double> bits, promised_bits;
  std::optional<std::string> not_applicable;  // the reason, when the cell is not applicable
  // Held more than promised: bits per token above the promised bits per token by more than 1%.
  bool over_promise() const { return bits && promised_bits && *bits > *promised_bits * 1.01; }
};

// One page section: the cells of a suite on a dataset with the same params, best first.
struct Section {
  std::string suite, dataset, id;
  std::string label;  // the params that tell it from the suite's other sections on the dataset
  std::vector<Cell> cells;
  std::string title() const {
    return suite + " · " + dataset + (label.empty() ? "" : " · " + label);
  }
};

// What a section shows: its suite's layout, or for a suite this build does not know, its mean
// score (higher is better) and no charts beyond the Pareto plot.
struct Layout {
  MetricRef rank;  // best first
  BoardLayout board;
};

Layout layout_of(const std::string& suite) {
  if (const Suite* s = find_suite(suite)) return {s->headline(), s->board()};
  Layout l{{"score", Better::kHigher}, {}};
  l.board.columns = {{"score", "score", BoardColumn::Format::kNumber, "%.3f"}};
  l.board.pareto = {"score", Better::kHigher};
  l.board.pareto_title = l.board.pareto_axis = "mean score";
  l.board.pareto_y_max = 1.0;
  return l;
}

// A table cell: its text, the number it sorts by (absent: it sorts by its text), shown as code.
struct TCell {
  TCell(std::string t, std::optional<double> value = std::nullopt, bool as_code = false)
      : text(std::move(t)), v(value), code(as_code) {}
  std::string text;
  std::optional<double> v;
  bool code;
  std::string badge;  // a flag after the text (HTML: <span class="kvb-badge">; Markdown: bold)
};

struct Table {
  std::string id;
  std::vector<std::string> head;
  std::vector<std::vector<TCell>> rows;
  std::vector<std::string> row_class;  // extra classes of each row ("" for none), when set
};

constexpr const char* kOverPromise = "over promise";

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::optional<double> number(const std::string& s) {
  return s.empty() ? std::nullopt
                   : std::optional<double>(parse_double_text(s, "results database"));
}

std::optional<double> metric(const Cell& c, const std::string& name) {
  const json& m = c.metrics;
  return m.contains(name) && m[name].is_number() ? std::optional<double>(m[name].get<double>())
                                                 : std::nullopt;
}

TCell num_cell(const std::optional<double>& v, const char* f) {
  return v ? TCell{fmt(f, *v), v} : TCell{"–", std::nullopt};
}

// Letters, digits, '-' and '_' kept; anything else becomes '-'.
std::string slug(const std::string& s) {
  std::string r;
  for (char c : s)
    r += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '-';
  return r;
}

std::string run_label(const std::string& id, const std::string& name) {
  return name.empty() ? id : id + " (" + name + ")";
}

TCell column_cell(const Cell& c, const BoardColumn& col) {
  const char* f = col.printf.c_str();
  switch (col.format) {
    case BoardColumn::Format::kNumber:
      return num_cell(metric(c, col.metric), f);
    case BoardColumn::Format::kWithSe: {
      const auto v = metric(c, col.metric), se = metric(c, col.metric + "_se");
      return v ? TCell{fmt(f, *v) + (se ? " ± " + fmt("%.2g", *se) : ""), v} : TCell{"–"};
    }
    case BoardColumn::Format::kPercent: {
      const auto v = metric(c, col.metric);
      return v ? TCell{fmt(f, 100 * *v), v} : TCell{"–"};
    }
    case BoardColumn::Format::kSeries: {
      std::string text;
      if (c.metrics.contains(col.metric))
        for (const JsonNode& v : c.metric_node(col.metric).items())
          text += (text.empty() ? "" : " · ") + fmt(f, v.number());
      return {text.empty() ? "–" : text};
    }
  }
  return {"–"};
}

Table section_table(const Section& s, const BoardLayout& board) {
  Table t;
  t.id = s.id;
  t.head = {"#", "run", "model", "method"};
  for (const BoardColumn& col : board.columns) t.head.push_back(col.title);
  t.head.insert(t.head.end(), {"bits/token", "promised bits/token"});
  size_t rank = 0;
  for (const Cell& c : s.cells) {
    // Cells that are not applicable come last, unranked, their reason in the first column.
    if (!c.not_applicable) ++rank;
    std::vector<TCell> row = {
        c.not_applicable ? TCell{"–"} : TCell{std::to_string(rank), static_cast<double>(rank)},
        {c.run},
        {c.model},
        {c.method, std::nullopt, true}};
    for (size_t k = 0; k < board.columns.size(); ++k)
      row.push_back(!c.not_applicable ? column_cell(c, board.columns[k])
                    : k == 0          ? TCell{"n/a (" + *c.not_applicable + ")"}
                                      : TCell{"–"});
    row.push_back(num_cell(c.bits, "%.1f"));
    if (c.over_promise()) row.back().badge = kOverPromise;
    row.push_back(num_cell(c.promised_bits, "%.1f"));
    t.rows.push_back(std::move(row));
    t.row_class.push_back(c.not_applicable ? "kvb-na" : c.over_promise() ? "kvb-over-promise" : "");
  }
  return t;
}

// What the flags of a section's table mean, for the flags it shows ("" when none).
std::string section_notes(const Section& s) {
  size_t over = 0, na = 0;
  for (const Cell& c : s.cells) {
    over += c.over_promise();
    na += c.not_applicable.has_value();
  }
  std::string n;
  if (over)
    n += std::string(kOverPromise) + ": " + std::to_string(over) +
         (over == 1 ? " cell holds more than its method" : " cells hold more than their methods") +
         " promised (bits/token above the promised bits/token by more than 1%).";
  if (na)
    n += std::string(n.empty() ? "" : " ") + "n/a: " + std::to_string(na) +
         (na == 1 ? " cell" : " cells") +
         " measured nothing this suite ranks (reason in the row); unranked, left out of the "
         "charts.";
  return n;
}

std::string html_table(const Table& t) {
  std::string h = "<table class=\"kvb-board\" id=\"" + svg::escape(t.id) + "\">\n<thead><tr>";
  for (const auto& c : t.head) h += "<th>" + svg::escape(c) + "</th>";
  h += "</tr></thead>\n<tbody>\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    const std::string cls = r < t.row_class.size() ? t.row_class[r] : "";
    h += "<tr class=\"kvb-row" + (cls.empty() ? "" : " " + cls) + "\">";
    for (const TCell& c : row) {
      std::string text = c.code ? "<code>" + svg::escape(c.text) + "</code>" : svg::escape(c.text);
      if (!c.badge.empty())
        text += " <span class=\"kvb-badge\">" + svg::escape(c.badge) + "</span>";
      h += c.v ? "<td class=\"n\" data-v=\"" + fmt("%.17g", *c.v) + "\">" + text + "</td>"
               : "<td>" + text + "</td>";
    }
    h += "</tr>\n";
  }
  return h + "</tbody>\n</table>\n";
}

std::string md_escape(const std::string& s) {
  std::string r;
  for (char c : s) r += c == '|' ? std::string("\\|") : std::string(1, c);
  return r;
}

std::string md_table(const Table& t) {
  std::string h = "|", rule = "|";
  for (const auto& c : t.head) {
    h += " " + md_escape(c) + " |";
    rule += "---|";
  }
  h += "\n" + rule + "\n";
  for (const auto& row : t.rows) {
    h += "|";
    for (const TCell& c : row)
      h += " " + (c.code ? "`" + c.text + "`" : md_escape(c.text)) +
           (c.badge.empty() ? "" : " **" + md_escape(c.badge) + "**") + " |";
    h += "\n";
  }
  return h;
}

// The latest cell of each method of `model` in the section, by method.
std::map<std::string, const Cell*> latest_by_method(const Section& s, const std::string& model) {
  std::map<std::string, const Cell*> out;
  for (const Cell& c : s.cells)
    if (c.model_path == model && (!out.count(c.method) || out[c.method]->id < c.id))
      out[c.method] = &c;
  return out;
}

std::string figure(const std::string& svg, const std::string& caption) {
  return "<figure>\n" + svg + "<figcaption>" + svg::escape(caption) + "</figcaption>\n</figure>\n";
}

// A heatmap per method of metrics[chart.metric] = {context_lengths, depths, scores}: depth rows,
// context length columns.
std::string heatmap_charts(const BoardChart& chart,
                           const std::map<std::string, const Cell*>& latest,
                           const std::string& where, const svg::Attrs& attrs) {
  std::string h;
  for (const auto& [method, c] : latest) {
    if (!c->metrics.contains(chart.metric)) continue;
    const JsonNode hm = c->metric_node(chart.metric);
    svg::Grid g;
    g.name = method;
    for (const JsonNode& d : hm.at("depths").items()) g.rows.push_back(fmt("%.2g", d.number()));
    for (const JsonNode& l : hm.at("context_lengths").items())
      g.cols.push_back(std::to_string(l.integer()));
    g.values.assign(g.rows.size(), std::vector<double>(g.cols.size(), 0.0));
    const JsonNode scores = hm.at("scores");
    for (size_t ci = 0; ci < g.cols.size(); ++ci)
      for (size_t di = 0; di < g.rows.size(); ++di) g.values[di][ci] = scores[ci][di].number();
    svg::Attrs a = attrs;
    a.push_back({"data-series", method});
    h += figure(svg::heatmap_chart(a, {where + ": " + method, chart.x, chart.y, chart.y_max}, g),
                method);
  }
  return h;
}

// One line per method through the array metrics[chart.metric], at x = 1, 2, ...
std::string line_charts(const BoardChart& chart, const std::map<std::string, const Cell*>& latest,
                        const std::string& where, const svg::Attrs& attrs,
                        const std::map<std::string, size_t>& colour) {
  std::vector<svg::Series> series;
  for (const auto& [method, c] : latest) {
    if (!c->metrics.contains(chart.metric)) continue;
    svg::Series se{method, colour.at(method), {}};
    const std::vector<JsonNode> ys = c->metric_node(chart.metric).items();
    for (size_t i = 0; i < ys.size(); ++i)
      se.points.push_back({static_cast<double>(i + 1), ys[i].number()});
    series.push_back(std::move(se));
  }
  if (series.empty()) return "";
  return figure(
      svg::line_chart(attrs, {where + ": " + chart.title, chart.x, chart.y, chart.y_max}, series),
      where + ": " + chart.caption);
}

// The charts of a section for one model; `colour` gives each method its palette index.
std::string section_charts(const Section& s, const BoardLayout& board,
                           const std::string& model_path, const std::string& model,
                           const std::map<std::string, size_t>& colour) {
  const auto latest = latest_by_method(s, model_path);
  const svg::Attrs base = {
      {"data-suite", s.suite}, {"data-dataset", s.dataset}, {"data-model", model}};
  auto attrs = [&](const std::string& chart) {
    svg::Attrs a = {{"data-chart", chart}};
    a.insert(a.end(), base.begin(), base.end());
    return a;
  };
  const std::string where = s.title() + " · " + model;
  const bool lower = board.pareto.better == Better::kLower;
  std::string h;
  std::vector<svg::Series> points;
  for (const auto& [method, c] : latest) {
    const auto y = metric(*c, board.pareto.name);
    if (c->bits && y && !c->not_applicable)
      points.push_back({method, colour.at(method), {{*c->bits, *y}}});
  }
  if (points.empty()) {
    h += "<p class=\"kvb-note\">" + svg::escape(where) +
         ": no memory recorded, no Pareto plot.</p>\n";
  } else {
    svg::Labels l{where + ": " + board.pareto_title + " against bits per token",
                  "bits per token held", board.pareto_axis, board.pareto_y_max};
    h += figure(svg::pareto_chart(attrs("pareto"), l, points, !lower),
                where + ": each method's latest cell; the line joins the Pareto front (" +
                    (lower ? "lower" : "higher") + " and further left is better).");
  }
  for (const BoardChart& chart : board.charts)
    h += chart.kind == BoardChart::Kind::kHeatmap
             ? heatmap_charts(chart, latest, where, attrs(chart.chart))
             : line_charts(chart, latest, where, attrs(chart.chart), colour);
  return h;
}

constexpr const char* kStyle =
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:0 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "th{background:#eee;cursor:pointer;user-select:none}"
    "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' "
    "\\25BC'}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "figure{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}"
    "figcaption{font-size:12px;color:#555;max-width:640px}"
    ".kvb-chart{font:11px system-ui,sans-serif;background:#fff}"
    ".kvb-grid{stroke:#e4e4e4}.kvb-frame{stroke:#999}"
    ".kvb-front{stroke:#444;stroke-width:1.5;stroke-dasharray:5 3}"
    "polyline.kvb-series{stroke-width:2}.kvb-cell{stroke:#fff}"
    ".kvb-axis-label{font-weight:600}"
    "#kvb-errors{color:#b00}#kvb-errors:empty{display:none}"
    "tr.kvb-na{color:#777}"
    "tr.kvb-over-promise td{background:#fff3e0}"
    ".kvb-badge{display:inline-block;margin-left:4px;padding:0 4px;border-radius:3px;"
    "background:#c62828;color:#fff;font-size:11px;font-weight:600}";

// Errors of the page's scripts land in #kvb-errors; installed before any other script runs.
constexpr const char* kErrorScript =
    "window.onerror=function(msg,src,line){var e=document.getElementById('kvb-errors');"
    "if(e)e.textContent+=msg+' (line '+line+')\\n';};";

// Sorting: a click on a header (or Enter on it) sorts by that column, numbers by data-v, text
// otherwise; #sort=<table id>:<column>:asc|desc in the address sorts on load.
constexpr const char* kSortScript = R"js(
(function () {
  function key(td) {
    var v = td.getAttribute('data-v');
    return v === null ? td.textContent : parseFloat(v);
  }
  function sortTable(t, col, dir) {
    var body = t.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      var c = typeof x === 'number' && typeof y === 'number'
          ? x - y : String(x).localeCompare(String(y));
      return dir === 'desc' ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, i) {
      if (i === col) th.setAttribute('aria-sort', dir === 'desc' ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.kvb-board'), function (t) {
    Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, i) {
      th.tabIndex = 0;
      function go() {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? 'desc' : 'asc';
        sortTable(t, i, dir);
        location.hash = 'sort=' + t.id + ':' + i + ':' + dir;
      }
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') go(); });
    });
  });
  var m = /^#sort=([\w-]+):(\d+):(asc|desc)$/.exec(location.hash);
  var t = m && document.getElementById(m[1]);
  if (t && t.tHead && +m[2] < t.tHead.rows[0].cells.length) sortTable(t, +m[2], m[3]);
  document.documentElement.setAttribute('data-kvb-ready', '1');
})();
)js";

}  // namespace

LeaderboardPages render_leaderboard(const LeaderboardOptions& opt) {
  const ResultsDb db(opt.db);
  const std::string run = opt.run.empty() ? "" : db.resolve_run(opt.run);
  // The methods asked for, in any spelling: a cell is one of them when the spec canonicalized in
  // the cell's dtype is the cell's method (spec_in_dtype); errors name the fp32 spelling.
  std::map<std::string, bool> wanted;  // fp32 canonical spec -> a cell of it was found
  for (const auto& spec : opt.methods) wanted[make_method(spec)->spec()] = false;
  auto is_wanted = [&](const std::string& method, const std::string& dtype) {
    bool any = false;
    for (auto& [spec, found] : wanted)
      if (spec_in_dtype(spec, dtype) == method) any = found = true;
    return any;
  };

  std::vector<Cell> cells;
  for (auto& r : db.query(
           std::string("SELECT c.id, r.id, r.name, c.suite, d.name, m.path, me.spec, c.record, "
                       "mem.bits_per_token, mem.tokens, ") +
               (db.version() >= 2 ? "mem.promised_bytes" : "NULL") +
               " FROM cells c JOIN runs r ON r.id = c.run_id JOIN models m ON m.id = c.model_id "
               "JOIN methods me ON me.id = c.method_id JOIN datasets d ON d.id = c.dataset_id "
               "LEFT JOIN memory mem ON mem.cell_id = c.id" +
               (run.empty() ? "" : " WHERE c.run_id = ?") + " ORDER BY c.id",
           run.empty() ? std::vector<std::string>{} : std::vector<std::string>{run})) {
    const std::string source = opt.db + ": cell " + r[0];
    const json record = parse_cell_record(r[7], source);
    if (!wanted.empty() && !is_wanted(r[6], record.value("dtype", std::string("fp32")))) continue;
    Cell c;
    c.id = std::stoll(r[0]);
    c.source = source;
    c.run = run_label(r[1], r[2]);
    c.suite = r[3];
    c.dataset = r[4];
    c.model_path = r[5];
    c.model = std::filesystem::path(r[5]).filename().string();
    c.method = r[6];
    c.metrics = record.value("metrics", json::object());
    c.params = record.value("params", json::object());
    c.not_applicable = not_applicable_reason(c.metrics);
    c.bits = number(r[8]);
    const auto tokens = number(r[9]), promised = number(r[10]);
    if (promised && tokens && *tokens > 0) c.promised_bits = 8 * *promised / *tokens;
    cells.push_back(std::move(c));
  }
  for (const auto& [m, found] : wanted)
    KVB_INPUT_CHECK(found, opt.db, ": no cells of method '", m, "'",
        opt.run.empty() ? "" : " in run '" + opt.run + "'");

  // Sections: the suites in registry order (then any other suite), each by dataset.
  auto suite_rank = [](const std::string& s) {
    const auto& all = suite_registry();
    return std::find_if(all.begin(), all.end(), [&](const Suite* x) { return x->name() == s; }) -
           all.begin();
  };
  // Runs of a suite with other params (a perplexity run in decode mode and one in prefill mode)
  // measure other things: each has a section of its own, labelled by the params that differ.
  // Such sections follow each other in the order their first cells were written.
  std::map<std::tuple<std::ptrdiff_t, std::string, std::string, size_t>, Section> by_board;
  std::map<std::string, size_t> params_order;  // by "suite|dataset|params"
  std::set<std::string> methods;
  for (Cell& c : cells) {
    methods.insert(c.method);
    const size_t order =
        params_order.emplace(c.suite + "|" + c.dataset + "|" + c.params.dump(), params_order.size())
            .first->second;
    Section& s = by_board[{suite_rank(c.suite), c.suite, c.dataset, order}];
    s.suite = c.suite;
    s.dataset = c.dataset;
    s.cells.push_back(std::move(c));
  }
  for (auto& [key, s] : by_board) {
    std::vector<const json*> others;
    for (const auto& [k, o] : by_board)
      if (std::get<1>(k) == s.suite && std::get<2>(k) == s.dataset && &o != &s)
        others.push_back(&o.cells.front().params);
    if (!others.empty()) s.label = params_label(s.cells.front().params, others);
  }
  std::map<std::string, size_t> colour;
  for (const auto& m : methods) colour.emplace(m, colour.size());
  std::set<std::string> ids;
  std::vector<Section> sections;
  std::vector<Layout> layouts;
  for (auto& [board, s] : by_board) {
    const Layout layout = layout_of(s.suite);
    const bool lower = layout.rank.better == Better::kLower;
    std::stable_sort(s.cells.begin(), s.cells.end(), [&](const Cell& a, const Cell& b) {
      // Cells that are not applicable last; then best first by the suite's headline metric, its
      // ties by the tie-break metric; cells without the headline metric after the others.
      if (a.not_applicable.has_value() != b.not_applicable.has_value())
        return !a.not_applicable.has_value();
      const auto x = metric(a, layout.rank.name), y = metric(b, layout.rank.name);
      if (!x || !y) return x.has_value() && !y.has_value();
      if (*x != *y || !layout.board.tie_break) return lower ? *x < *y : *x > *y;
      const MetricRef& t = *layout.board.tie_break;
      const auto u = metric(a, t.name), v = metric(b, t.name);
      if (!u || !v) return u.has_value() && !v.has_value();
      return t.better == Better::kLower ? *u < *v : *u > *v;
    });
    s.id =
        "t-" + slug(s.suite) + "-" + slug(s.dataset) + (s.label.empty() ? "" : "-" + slug(s.label));
    while (!ids.insert(s.id).second) s.id += "-";
    sections.push_back(std::move(s));
    layouts.push_back(layout);
  }

  Table timings;
  timings.id = "t-timings";
  timings.head = {"run",    "commit",    "model",  "method", "name",   "shape",
                  "device", "reps",      "median ms", "min ms", "max ms", "GB/s",
                  "GFLOP/s", "of roofline"};
  if (db.version() >= 2)
    for (auto& r : db.query(
             "SELECT k.run_id, r.name, m.path, me.spec, k.name, k.shape, k.device, k.reps, "
             "k.median_ms, k.min_ms, k.max_ms, k.gbps, k.gflops, k.roofline_fraction, "
             "substr(r.git_commit, 1, 12) || CASE WHEN r.git_dirty THEN '+dirty' ELSE '' END "
             "FROM kernel_timings k JOIN runs r ON r.id = k.run_id "
             "LEFT JOIN cells c ON c.run_id = k.run_id AND c.key = k.cell_key "
             "LEFT JOIN models m ON m.id = c.model_id LEFT JOIN methods me ON me.id = c.method_id" +
                 std::string(run.empty() ? "" : " WHERE k.run_id = ?") +
                 " ORDER BY k.run_id, me.spec, k.name, k.shape, k.device",
             run.empty() ? std::vector<std::string>{} : std::vector<std::string>{run})) {
      if (!wanted.empty() && !wanted.count(r[3])) continue;
      timings.rows.push_back(
          {{run_label(r[0], r[1])},
           {r[14].empty() ? "–" : r[14]},
           {r[2].empty() ? "–" : std::filesystem::path(r[2]).filename().string()},
           {r[3].empty() ? "–" : r[3], std::nullopt, !r[3].empty()},
           {r[4]},
           {r[5]},
           {r[6]},
           {r[7], parse_double_text(r[7], "results database")},
           num_cell(number(r[8]), "%.3g"),
           num_cell(number(r[9]), "%.3g"),
           num_cell(number(r[10]), "%.3g"),
           num_cell(number(r[11]), "%.3g"),
           num_cell(number(r[12]), "%.3g"),
           num_cell(number(r[13]), "%.2f")});
    }

  std::string scope = std::filesystem::path(opt.db).filename().string() + " · " +
                      (run.empty() ? "every run" : "run " + opt.run);
  if (!wanted.empty()) {
    scope += " · methods:";
    for (const auto& [m, found] : wanted) scope += " " + m;
  }
  LeaderboardPages p;
  p.html = std::string(
               "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<title>kvbench leaderboard</title>\n<style>") +
           kStyle + "</style>\n<script>" + kErrorScript +
           "</script>\n</head><body>\n<h1>kvbench leaderboard</h1>\n<p class=\"kvb-scope\">" +
           svg::escape(scope) + "</p>\n<pre id=\"kvb-errors\"></pre>\n";
  p.markdown = "# kvbench leaderboard\n\n" + md_escape(scope) +
               ". Charts: `index.html` (`kvbench leaderboard`) or `kvbench report`.\n";
  for (size_t k = 0; k < sections.size(); ++k) {
    const Section& s = sections[k];
    const BoardLayout& board = layouts[k].board;
    const std::string title = s.title();
    const Table t = section_table(s, board);
    p.html += "<section class=\"kvb-suite\" data-suite=\"" + svg::escape(s.suite) +
              "\" data-dataset=\"" + svg::escape(s.dataset) + "\"" +
              (s.label.empty() ? "" : " data-params=\"" + svg::escape(s.label) + "\"") + ">\n<h2>" +
              svg::escape(title) + "</h2>\n" + html_table(t);
    const std::string notes = section_notes(s);
    if (!notes.empty()) p.html += "<p class=\"kvb-note\">" + svg::escape(notes) + "</p>\n";
    std::vector<std::string> models;  // in order of first appearance
    for (const Cell& c : s.cells)
      if (std::find(models.begin(), models.end(), c.model_path) == models.end())
        models.push_back(c.model_path);
    for (const auto& m : models)
      p.html += section_charts(s, board, m, std::filesystem::path(m).filename().string(), colour);
    p.html += "</section>\n";
    p.markdown += "\n## " + md_escape(title) + "\n\n" + md_table(t);
    if (!notes.empty()) p.markdown += "\n" + md_escape(notes) + "\n";
  }
  if (sections.empty()) {
    p.html += "<p>No finished cells.</p>\n";
    p.markdown += "\nNo finished cells.\n";
  }
  if (!timings.rows.empty()) {
    p.html += "<section class=\"kvb-timings\">\n<h2>timings</h2>\n" + html_table(timings) +
              "</section>\n";
    p.markdown += "\n## timings\n\n" + md_table(timings);
  }
  p.html += std::string("<script>") + kSortScript + "</script>\n</body></html>\n";
  return p;
}

}  // namespace kvb
