// `kvbench leaderboard` and `kvbench report --methods`: Markdown tables that say what the
// database holds; an HTML page whose charts (inline SVG, one series per method) render in
// headless Chromium with no script error and no network request; bad input refused with one
// line, exit 2 and nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "common/json_io.h"
#include "methods/registry.h"
#include "tests/results_test_util.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Canonical specs, as the database holds them.
const std::vector<std::string> kMethods = {"full(dtype=fp32)", "streaming(sink=2,window=24)",
                                           "streaming(sink=4,window=32)"};

size_t count(const std::string& s, const std::string& sub) {
  size_t n = 0;
  for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + 1)) ++n;
  return n;
}

// Every <svg ...>...</svg> element whose start tag has data-chart="<chart>".
std::vector<std::string> charts(const std::string& html, const std::string& chart) {
  std::vector<std::string> out;
  for (size_t p = html.find("<svg "); p != std::string::npos; p = html.find("<svg ", p + 1)) {
    const size_t tag_end = html.find('>', p), end = html.find("</svg>", p);
    if (tag_end == std::string::npos || end == std::string::npos) break;
    if (html.substr(p, tag_end - p).find("data-chart=\"" + chart + "\"") != std::string::npos)
      out.push_back(html.substr(p, end + 6 - p));
  }
  return out;
}

// The data-series of every element of class "kvb-series" (its class list starting so).
std::multiset<std::string> series(const std::string& svg) {
  std::multiset<std::string> out;
  static const std::regex re("class=\"kvb-series[^\"]*\" data-series=\"([^\"]*)\"");
  for (std::sregex_iterator it(svg.begin(), svg.end(), re), end; it != end; ++it)
    out.insert((*it)[1]);
  return out;
}

// The points="..." of every polyline of class `cls`.
std::vector<std::string> polyline_points(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  const std::regex re("<polyline class=\"" + cls + "\"[^>]* points=\"([^\"]*)\"");
  for (std::sregex_iterator it(svg.begin(), svg.end(), re), end; it != end; ++it)
    out.push_back((*it)[1]);
  return out;
}

class ResultsLeaderboard : public ::testing::Test {
 protected:
  // One database for every test: perplexity, niah (2 context lengths x 2 depths) and scbench
  // (2 turns) cells of three methods, made by `kvbench run` on a tiny random model.
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>();
    const json config = test::small_suite_config(*dir_, {.name = "board",
                                                         .seed = 11,
                                                         .methods = kMethods,
                                                         .niah_lengths = {160, 224},
                                                         .scbench_mode = "multi_turn"});
    write_file(dir_->path("suite.json"), config.dump(2));
    auto r = test::run_kvbench("run --progress lines --suite " + test::q(dir_->path("suite.json")) +
                               " --db " + test::q(db()));
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::string db() { return dir_->path("r.db"); }
  // Writes the leaderboard of db() into a fresh directory; returns it.
  std::string leaderboard() {
    const std::string out = tmp_.path("board" + std::to_string(++boards_));
    auto r = test::run_kvbench("leaderboard --db " + test::q(db()) + " --out " + test::q(out));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, out + "/index.html\n" + out + "/leaderboard.md\n");
    return out;
  }
  static std::unique_ptr<test::TempDir> dir_;
  test::TempDir tmp_;
  int boards_ = 0;
};
std::unique_ptr<test::TempDir> ResultsLeaderboard::dir_;

TEST_F(ResultsLeaderboard, MarkdownHoldsOneRowPerCellWithTheDatabasesNumbers) {
  const std::string md = test::slurp(leaderboard() + "/leaderboard.md");
  EXPECT_EQ(md.rfind("# kvbench leaderboard\n", 0), 0u) << md;
  for (const char* h :
       {"\n## perplexity · prose\n\n| # | run | model | method | KL vs full ± se | ΔNLL ± se | "
        "top-1 agreement | ppl ± se | bits/token | promised bits/token |\n|---|",
        "\n## niah · prose\n\n| # | run | model | method | score | bits/token | promised "
        "bits/token |\n|---|",
        "\n## scbench · kv\n\n| # | run | model | method | score | score per turn | bits/token | "
        "promised bits/token |\n|---|",
        "\n## timings\n\n| run | commit | model | method | name | shape | device | reps | median ms |"})
    EXPECT_NE(md.find(h), std::string::npos) << h << "\n" << md;
  // Every method in every suite, one row each (after its rank; run 1, model m).
  for (const auto& m : kMethods) EXPECT_EQ(count(md, " | 1 | m | `" + m + "` | "), 3u) << m;
  // Best first by fidelity: the full cache (KL 0) ranks 1, then the lowest KL from the database.
  const size_t ppl = md.find("## perplexity");
  ASSERT_NE(ppl, std::string::npos);
  EXPECT_NE(md.find("\n| 1 | 1 | m | `full(dtype=fp32)` | ", ppl), std::string::npos) << md;
  const std::string second = test::scalar_text(
      db(), "SELECT printf('%.3g', min(value)) FROM metrics WHERE name = 'kl_mean' AND value > 0");
  ASSERT_FALSE(second.empty());
  const size_t row2 = md.find("\n| 2 | 1 | m | `", ppl);
  ASSERT_NE(row2, std::string::npos) << md;
  EXPECT_NE(md.substr(row2, md.find('\n', row2 + 1) - row2).find("` | " + second + " ± "),
            std::string::npos)
      << second << "\n"
      << md;
  // The full cache is the reference: KL 0, ΔNLL 0, the same top-1, and it holds what it promised.
  EXPECT_TRUE(std::regex_search(
      md.substr(ppl, md.find("## ", ppl + 3) - ppl),
      std::regex(" \\| `full\\(dtype=fp32\\)` \\| 0 ± 0 \\| \\+0 ± 0 \\| 100\\.0% \\| [0-9.e+]+ ± "
                 "[0-9.e+-]+ \\| ([0-9.]+) \\| \\1 \\|\n")))
      << md;
  // NIAH timings: prefill and decode per context length for each method.
  EXPECT_EQ(count(md, " | niah.prefill | context_len=224,chunk=0 | cpu | 2 | "), 3u) << md;
  EXPECT_EQ(count(md, " | niah.prefill | context_len=160,chunk=0 | cpu | 2 | "), 3u) << md;
}

TEST_F(ResultsLeaderboard, PageIsSelfContainedWithAChartPerSuiteAndASeriesPerMethod) {
  const std::string html = test::slurp(leaderboard() + "/index.html");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  // Nothing to fetch: the only URL is the SVG namespace, and nothing has a src or href.
  std::string rest = html;
  for (size_t p; (p = rest.find("xmlns=\"http://www.w3.org/2000/svg\"")) != std::string::npos;)
    rest.erase(p, 34);
  for (const char* bad : {"http:", "https:", "//www", "src=", "href=", "@import", "url("})
    EXPECT_EQ(rest.find(bad), std::string::npos) << bad;
  const std::multiset<std::string> each(kMethods.begin(), kMethods.end());
  const auto pareto = charts(html, "pareto");
  ASSERT_EQ(pareto.size(), 3u);  // perplexity, niah, scbench
  for (const auto& svg : pareto) {
    EXPECT_EQ(series(svg), each) << svg;
    EXPECT_EQ(count(svg, "<circle class=\"kvb-series kvb-point\""), 3u);
    const auto front = polyline_points(svg, "kvb-front");
    ASSERT_EQ(front.size(), 1u);
    EXPECT_FALSE(front[0].empty()) << svg;
  }
  EXPECT_NE(pareto[0].find("data-suite=\"perplexity\""), std::string::npos);  // first section
  const auto heat = charts(html, "niah-heatmap");
  ASSERT_EQ(heat.size(), 3u);
  std::multiset<std::string> heat_series;
  for (const auto& svg : heat) {
    for (const auto& s : series(svg)) heat_series.insert(s);
    EXPECT_EQ(count(svg, "<rect class=\"kvb-cell\""), 4u) << svg;  // 2 depths x 2 lengths
    EXPECT_NE(svg.find("data-row=\"1\" data-col=\"224\""), std::string::npos) << svg;
  }
  EXPECT_EQ(heat_series, each);
  const auto turns = charts(html, "scbench-turns");
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_EQ(series(turns[0]), each);
  for (const auto& pts : polyline_points(turns[0], "kvb-series"))
    EXPECT_EQ(count(pts, ","), 2u) << pts;  // two turns
  // The same input gives the same page.
  EXPECT_EQ(test::slurp(leaderboard() + "/index.html"), html);
}

TEST_F(ResultsLeaderboard, ChromiumRendersThePageWithoutErrorsOrNetwork) {
  if (std::system("command -v chromium >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "chromium is not on PATH; the headless rendering check needs it";
  const std::string out = leaderboard();
  int n = 0;
  // Runs headless Chromium on `url` with `mode` (--dump-dom or --screenshot=FILE); the page may
  // not resolve any host. Returns stdout; stderr and the network log go to `err` and `netlog`.
  auto chromium = [&](const std::string& url, const std::string& mode, std::string& err,
                      std::string& netlog) {
    const std::string tag = std::to_string(++n);
    const std::string cmd =
        "timeout 120 chromium --headless=new --no-sandbox --disable-gpu "
        "--disable-background-networking --no-first-run --user-data-dir=" +
        test::q(tmp_.path("profile" + tag)) +
        " --enable-logging=stderr --v=0 --host-resolver-rules='MAP * ~NOTFOUND' --log-net-log=" +
        test::q(tmp_.path("net" + tag + ".json")) + " --window-size=1280,2000 " + mode + " " +
        test::q(url) + " >" + test::q(tmp_.path("out" + tag)) + " 2>" +
        test::q(tmp_.path("err" + tag));
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    err = test::slurp(tmp_.path("err" + tag));
    netlog = test::slurp(tmp_.path("net" + tag + ".json"));
    return test::slurp(tmp_.path("out" + tag));
  };
  auto clean = [](const std::string& err, const std::string& netlog) {
    // No console output at all (the page logs nothing; errors and failed loads would show).
    EXPECT_EQ(err.find("Uncaught"), std::string::npos) << err;
    EXPECT_EQ(err.find(":CONSOLE"), std::string::npos) << err;
    // No request made on behalf of the file:// page (the browser's own background requests
    // carry no page origin).
    EXPECT_GT(netlog.size(), 100u);
    EXPECT_EQ(netlog.find("\\u003Cfile://"), std::string::npos);
  };
  const std::string url = "file://" + out + "/index.html";
  std::string err, netlog;

  const std::string dom = chromium(url, "--dump-dom", err, netlog);
  clean(err, netlog);
  EXPECT_NE(dom.find("data-kvb-ready=\"1\""), std::string::npos) << "the script did not finish";
  EXPECT_NE(dom.find("<pre id=\"kvb-errors\"></pre>"), std::string::npos) << dom;
  const std::multiset<std::string> each(kMethods.begin(), kMethods.end());
  for (const char* chart : {"pareto", "scbench-turns"}) {
    const auto svgs = charts(dom, chart);
    ASSERT_FALSE(svgs.empty()) << chart;
    for (const auto& svg : svgs) EXPECT_EQ(series(svg), each) << svg;
  }
  for (const auto& svg : charts(dom, "pareto")) {
    EXPECT_EQ(count(svg, "<circle class=\"kvb-series kvb-point\""), 3u) << svg;
    EXPECT_FALSE(polyline_points(svg, "kvb-front").at(0).empty()) << svg;
  }
  for (const auto& pts : polyline_points(charts(dom, "scbench-turns").at(0), "kvb-series"))
    EXPECT_EQ(count(pts, ","), 2u) << pts;
  const auto heat = charts(dom, "niah-heatmap");
  ASSERT_EQ(heat.size(), 3u);
  for (const auto& svg : heat) EXPECT_EQ(count(svg, "<rect class=\"kvb-cell\""), 4u) << svg;
  // Headers become sort controls.
  EXPECT_NE(dom.find("<th tabindex=\"0\">#</th>"), std::string::npos) << dom;

  // The address sorts a table: rank descending puts the last row first.
  const std::string sorted =
      chromium(url + "#sort=t-perplexity-prose:0:desc", "--dump-dom", err, netlog);
  clean(err, netlog);
  const size_t table = sorted.find("id=\"t-perplexity-prose\"");
  ASSERT_NE(table, std::string::npos);
  EXPECT_NE(sorted.find("<th tabindex=\"0\" aria-sort=\"descending\">#</th>", table),
            std::string::npos);
  EXPECT_EQ(sorted.find("<tr class=\"kvb-row\"><td class=\"n\" data-v=\"", table),
            sorted.find("<tr class=\"kvb-row\"><td class=\"n\" data-v=\"3\">3</td>", table));

  // A screenshot: a PNG of the window's size, far bigger than one of an empty page.
  write_file(tmp_.path("empty.html"), "<!DOCTYPE html><html><body></body></html>\n");
  chromium(url, "--screenshot=" + test::q(tmp_.path("shot.png")), err, netlog);
  clean(err, netlog);
  chromium("file://" + tmp_.path("empty.html"), "--screenshot=" + test::q(tmp_.path("empty.png")),
           err, netlog);
  const std::string png = test::slurp(tmp_.path("shot.png"));
  const std::string empty = test::slurp(tmp_.path("empty.png"));
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(png[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<unsigned char>(png[at + 3]));
  };
  EXPECT_EQ(be32(16), 1280u);  // IHDR width, height
  EXPECT_EQ(be32(20), 2000u);
  EXPECT_GT(png.size(), 4 * empty.size()) << png.size() << " vs empty " << empty.size();
}

// A database of its own: the small suite with a one-shot method as well (SnapKV, not applicable
// in decode-mode perplexity), and one perplexity cell made to hold twice its promise. The board
// ranks perplexity by KL, so no lossy method ranks above the full cache whatever its perplexity;
// the SnapKV row is unranked with its reason and left out of the Pareto plot; the cell over its
// promise carries a badge and the section a note.
TEST_F(ResultsLeaderboard, RanksPerplexityByKlListsCellsNotApplicableAndFlagsBrokenPromises) {
  test::TempDir d;
  const std::string stream = "streaming(sink=2,window=24)",
                    snap = make_method("snapkv(budget=16,window=4)")->spec();
  json config =
      test::small_suite_config(d, {.name = "flags", .seed = 11, .methods = {"full", stream, snap}});
  // The same perplexity run in prefill mode too: a section of its own, where SnapKV is ranked.
  json prefill = config["runs"][0];
  prefill["params"]["mode"] = "prefill";
  config["runs"].push_back(prefill);
  write_file(d.path("suite.json"), config.dump(2));
  const std::string db = d.path("r.db");
  auto r = test::run_kvbench("run --progress lines --suite " + test::q(d.path("suite.json")) +
                             " --db " + test::q(db));
  ASSERT_EQ(r.code, 0) << r.err;
  test::exec_rw(db,
                "UPDATE memory SET bits_per_token = 2 * bits_per_token WHERE cell_id = (SELECT "
                "c.id FROM cells c JOIN methods me ON me.id = c.method_id WHERE c.suite = "
                "'perplexity' AND me.spec = '" +
                    stream + "' ORDER BY c.id LIMIT 1)");  // decode
  const std::string out = tmp_.path("flags");
  r = test::run_kvbench("leaderboard --db " + test::q(db) + " --out " + test::q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string md = test::slurp(out + "/leaderboard.md");
  const size_t at = md.find("## perplexity · prose\n"), end = md.find("\n## ", at + 3);
  ASSERT_NE(at, std::string::npos) << md;
  const std::string sec = md.substr(at, end - at);
  const size_t full = sec.find("\n| 1 | 1 | m | `full(dtype=fp32)` | 0 ± 0 | ");
  const size_t second = sec.find("\n| 2 | 1 | m | `" + stream + "` | ");
  const size_t na = sec.find("\n| – | 1 | m | `" + snap + "` | n/a (");
  ASSERT_NE(full, std::string::npos) << sec;
  ASSERT_NE(second, std::string::npos) << sec;
  ASSERT_NE(na, std::string::npos) << sec;
  EXPECT_LT(full, second);
  EXPECT_LT(second, na);
  EXPECT_NE(sec.substr(second, sec.find('\n', second + 1) - second).find(" **over promise** |"),
            std::string::npos)
      << sec;
  // (SnapKV's row may carry the flag too: in decode mode its state holds the whole window.)
  EXPECT_EQ(count(sec, "**over promise**"), 1 + count(sec.substr(na), "**over promise**")) << sec;
  EXPECT_NE(sec.find("\nover promise: "), std::string::npos) << sec;
  EXPECT_NE(sec.find(" promised (bits/token above the promised bits/token by more than 1%)."),
            std::string::npos)
      << sec;
  EXPECT_NE(sec.find("n/a: 1 cell measured nothing this suite ranks"), std::string::npos) << sec;
  // The other sections rank SnapKV as usual: prefill-mode perplexity (its own section, titled by
  // the params that differ) and NIAH.
  EXPECT_EQ(count(md, "| – | 1 | m | `"), 1u) << md;
  const size_t pre = md.find("\n## perplexity · prose · mode=prefill, prefix=32\n");
  ASSERT_NE(pre, std::string::npos) << md;
  const std::string psec = md.substr(pre, md.find("\n## ", pre + 3) - pre);
  EXPECT_NE(psec.find("\n| 1 | 1 | m | `full(dtype=fp32)` | 0 ± 0 | "), std::string::npos) << psec;
  EXPECT_NE(psec.find(" | m | `" + snap + "` | "), std::string::npos) << psec;
  EXPECT_EQ(psec.find("n/a"), std::string::npos) << psec;

  const std::string html = test::slurp(out + "/index.html");
  EXPECT_GE(count(html, "<tr class=\"kvb-row kvb-over-promise\">"), 1u);
  EXPECT_GE(count(html, "<span class=\"kvb-badge\">over promise</span>"), 1u);
  EXPECT_EQ(count(html, "<tr class=\"kvb-row kvb-na\">"), 1u);
  const auto pareto = charts(html, "pareto");
  ASSERT_EQ(pareto.size(), 3u);  // perplexity (decode, prefill), niah
  EXPECT_EQ(series(pareto[0]), (std::multiset<std::string>{"full(dtype=fp32)", stream}));
  for (size_t k : {1, 2})
    EXPECT_EQ(series(pareto[k]), (std::multiset<std::string>{"full(dtype=fp32)", stream, snap}));
  EXPECT_NE(html.find("data-params=\"mode=prefill, prefix=32\""), std::string::npos);

  if (std::system("command -v chromium >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "chromium is not on PATH; the headless rendering check needs it";
  const std::string cmd =
      "timeout 120 chromium --headless=new --no-sandbox --disable-gpu "
      "--disable-background-networking --no-first-run --user-data-dir=" +
      test::q(tmp_.path("profile-flags")) +
      " --enable-logging=stderr --v=0 --host-resolver-rules='MAP * ~NOTFOUND' --dump-dom " +
      test::q("file://" + out + "/index.html") + " >" + test::q(tmp_.path("dom")) + " 2>" +
      test::q(tmp_.path("dom-err"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string dom = test::slurp(tmp_.path("dom")), err = test::slurp(tmp_.path("dom-err"));
  EXPECT_EQ(err.find("Uncaught"), std::string::npos) << err;
  EXPECT_EQ(err.find(":CONSOLE"), std::string::npos) << err;
  EXPECT_NE(dom.find("data-kvb-ready=\"1\""), std::string::npos);
  EXPECT_NE(dom.find("<pre id=\"kvb-errors\"></pre>"), std::string::npos);
  EXPECT_NE(dom.find("<span class=\"kvb-badge\">over promise</span>"), std::string::npos);
  EXPECT_NE(dom.find("<tr class=\"kvb-row kvb-na\">"), std::string::npos);
}

TEST_F(ResultsLeaderboard, ReportShowsOnlyTheChosenMethods) {
  const std::string page = tmp_.path("two.html");
  auto r = test::run_kvbench("report --db " + test::q(db()) +
                             " --methods 'streaming(window=24,sink=2)' full --run 1 --out " +
                             test::q(page));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = test::slurp(page);
  EXPECT_NE(html.find("methods: full(dtype=fp32) streaming(sink=2,window=24)"), std::string::npos);
  EXPECT_EQ(html.find("streaming(sink=4,window=32)"), std::string::npos);
  EXPECT_EQ(count(html, "<tr class=\"kvb-row\"><td class=\"n\""), 6u);  // 2 methods x 3 suites
  const std::multiset<std::string> two = {"full(dtype=fp32)", "streaming(sink=2,window=24)"};
  for (const char* chart : {"pareto", "scbench-turns"})
    for (const auto& svg : charts(html, chart)) EXPECT_EQ(series(svg), two) << svg;
  EXPECT_EQ(charts(html, "niah-heatmap").size(), 2u);
  // Without --methods: every method.
  auto all = test::run_kvbench("report --db " + test::q(db()) + " --out " + test::q(page));
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(count(test::slurp(page), "<tr class=\"kvb-row\"><td class=\"n\""), 9u);
}

TEST_F(ResultsLeaderboard, BadInputIsRefusedWithOneLineAndNothingWritten) {
  const std::string out = tmp_.path("out"), page = tmp_.path("page.html");
  for (const auto& b : test::bad_databases(tmp_, db())) {
    test::expect_refused("leaderboard --db " + test::q(b.path) + " --out " + test::q(out), b.path,
                         b.problem);
    test::expect_refused("report --db " + test::q(b.path) + " --out " + test::q(page), b.path,
                         b.problem);
  }
  // The database is fine, the question is not.
  test::expect_refused("leaderboard --db " + test::q(db()) + " --run 7 --out " + test::q(out), db(),
                       "no run '7'");
  test::expect_refused("report --db " + test::q(db()) + " --run nosuch --out " + test::q(page),
                       db(), "no run 'nosuch'");
  test::expect_refused(
      "report --db " + test::q(db()) + " --methods 'streaming(window=99)' --out " + test::q(page),
      db(), "no cells of method 'streaming(sink=4,window=99)'");
  auto spec = test::run_kvbench("report --db " + test::q(db()) + " --methods 'nosuch(x=1)' --out " +
                                test::q(page));
  EXPECT_EQ(spec.code, 2) << spec.err;
  EXPECT_EQ(test::count_lines(spec.err), 1) << spec.err;
  EXPECT_NE(spec.err.find("spec 'nosuch(x=1)'"), std::string::npos) << spec.err;
  write_file(tmp_.path("file"), "x");
  test::expect_refused("leaderboard --db " + test::q(db()) + " --out " + test::q(tmp_.path("file")),
                       tmp_.path("file"), "exists and is not a directory");
  auto none = test::run_kvbench("leaderboard --db " + test::q(tmp_.path("none.db")) + " --out " +
                                test::q(out));
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("none.db: no such file"), std::string::npos) << none.err;
  EXPECT_FALSE(fs::exists(tmp_.path("none.db")));
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(page));
}

TEST_F(ResultsLeaderboard, Version1DatabaseIsReadAsItIs) {
  const std::string old = tmp_.path("v1.db");
  test::make_v1_copy(db(), old);
  const std::string before = test::slurp(old), out = tmp_.path("v1board");
  auto r = test::run_kvbench("leaderboard --db " + test::q(old) + " --out " + test::q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::slurp(old), before);
  const std::string md = test::slurp(out + "/leaderboard.md");
  EXPECT_EQ(count(md, " | 1 | m | `full(dtype=fp32)` | "), 3u) << md;
  EXPECT_EQ(md.find("## timings"), std::string::npos) << md;  // version 1 kept none
  // Only perplexity cells had memory rows then: one Pareto plot.
  const std::string html = test::slurp(out + "/index.html");
  EXPECT_EQ(charts(html, "pareto").size(), 1u);
  EXPECT_EQ(count(html, "no memory recorded, no Pareto plot."), 2u);
}

}  // namespace
}  // namespace kvb
