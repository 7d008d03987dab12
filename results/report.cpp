#include "results/report.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <vector>

#include "harness/common/check.h"
#include "results/sqlite_store.h"

namespace kvb {
namespace {

struct Entry {
  std::string run, model, method, value, kl, bits;
  double key = 0;  // sort key, smaller is better
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string r;
  for (char c : s) switch (c) {
      case '&':
        r += "&amp;";
        break;
      case '<':
        r += "&lt;";
        break;
      case '>':
        r += "&gt;";
        break;
      case '"':
        r += "&quot;";
        break;
      case '\'':
        r += "&#39;";
        break;
      default:
        r += c;
    }
  return r;
}

std::string leaderboard_html(const std::string& db_path, const std::string& run_id) {
  KVB_INPUT_CHECK(std::filesystem::exists(db_path), db_path, ": no such file");
  KVB_INPUT_CHECK(check_results_db(db_path) > 0, db_path, ": not a kvbench results database");
  sqlite3* db = nullptr;
  KVB_CHECK(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK,
            "cannot open ", db_path);
  struct Closer {
    sqlite3* d;
    ~Closer() { sqlite3_close(d); }
  } closer{db};
  const std::string sql =
      "SELECT c.suite, d.name, r.id || CASE WHEN r.name = '' THEN '' ELSE ' (' || r.name || ')' "
      "END, m.path, me.spec, "
      "(SELECT value FROM metrics x WHERE x.cell_id = c.id AND x.name = 'ppl'), "
      "(SELECT se FROM metrics x WHERE x.cell_id = c.id AND x.name = 'ppl'), "
      "(SELECT value FROM metrics x WHERE x.cell_id = c.id AND x.name = 'kl_mean'), "
      "(SELECT value FROM metrics x WHERE x.cell_id = c.id AND x.name = 'score'), "
      "(SELECT bits_per_token FROM memory x WHERE x.cell_id = c.id) "
      "FROM cells c JOIN runs r ON r.id = c.run_id JOIN models m ON m.id = c.model_id "
      "JOIN methods me ON me.id = c.method_id JOIN datasets d ON d.id = c.dataset_id " +
      std::string(run_id.empty() ? "" : "WHERE c.run_id = ?1 ") + "ORDER BY c.id";
  sqlite3_stmt* s = nullptr;
  KVB_CHECK(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK, sqlite3_errmsg(db));
  if (!run_id.empty()) sqlite3_bind_text(s, 1, run_id.c_str(), -1, SQLITE_TRANSIENT);
  auto text = [&](int i) {
    const auto* p = sqlite3_column_text(s, i);
    return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
  };
  auto null = [&](int i) { return sqlite3_column_type(s, i) == SQLITE_NULL; };
  std::map<std::pair<std::string, std::string>, std::vector<Entry>> boards;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    Entry e;
    e.run = text(2);
    e.model = std::filesystem::path(text(3)).filename().string();
    e.method = text(4);
    if (!null(5)) {
      const double ppl = sqlite3_column_double(s, 5);
      e.value =
          fmt("%.4g", ppl) + (null(6) ? "" : " ± " + fmt("%.2g", sqlite3_column_double(s, 6)));
      e.key = ppl;
    } else if (!null(8)) {
      e.value = fmt("%.3f", sqlite3_column_double(s, 8));
      e.key = -sqlite3_column_double(s, 8);
    }
    e.kl = null(7) ? "–" : fmt("%.3g", sqlite3_column_double(s, 7));
    e.bits = null(9) ? "–" : fmt("%.1f", sqlite3_column_double(s, 9));
    boards[{text(0), text(1)}].push_back(std::move(e));
  }
  sqlite3_finalize(s);
  KVB_INPUT_CHECK(rc == SQLITE_DONE, db_path, ": ", sqlite3_errmsg(db));
  std::string h =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kvbench leaderboard</title>\n"
      "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:"
      "2em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}"
      "td.n{text-align:right;font-variant-numeric:tabular-nums}</style></head><body>\n"
      "<h1>kvbench leaderboard</h1>\n<p>" +
      html_escape(std::filesystem::path(db_path).filename().string()) + "</p>\n";
  for (auto& [board, entries] : boards) {
    const bool ppl = board.first == "perplexity";
    std::stable_sort(entries.begin(), entries.end(),
                     [](const Entry& a, const Entry& b) { return a.key < b.key; });
    h += "<h2>" + html_escape(board.first) + " · " + html_escape(board.second) + "</h2>\n<table>\n";
    h += std::string("<tr><th>#</th><th>run</th><th>model</th><th>method</th><th>") +
         (ppl ? "ppl ± se</th><th>KL vs full" : "score") + "</th><th>bits/token</th></tr>\n";
    for (size_t i = 0; i < entries.size(); ++i) {
      const Entry& e = entries[i];
      h += "<tr><td class=\"n\">" + std::to_string(i + 1) + "</td><td>" + html_escape(e.run) +
           "</td><td>" + html_escape(e.model) + "</td><td><code>" + html_escape(e.method) +
           "</code></td><td class=\"n\">" + html_escape(e.value) + "</td>" +
           (ppl ? "<td class=\"n\">" + html_escape(e.kl) + "</td>" : "") + "<td class=\"n\">" +
           html_escape(e.bits) + "</td></tr>\n";
    }
    h += "</table>\n";
  }
  if (boards.empty()) h += "<p>No finished cells.</p>\n";
  return h + "</body></html>\n";
}

}  // namespace kvb
