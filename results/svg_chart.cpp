#include "results/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/check.h"

namespace kvb::svg {
namespace {

constexpr double kWidth = 640, kLeft = 72, kRight = 24, kTop = 16, kPlotHeight = 260;
constexpr double kBottom = 46, kLegendRow = 18;
constexpr double kHeatWidth = 420, kHeatHeight = 180;  // heatmaps: two fit side by side

std::string num(double v, const char* f = "%.4g") {
  char b[48];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string px(double v) { return num(v, "%.1f"); }

// Ticks at a "nice" step (1, 2 or 5 times a power of ten) covering [lo, hi].
struct Scale {
  double lo = 0, hi = 1, step = 0.2;
  double a = 0, b = 1;  // pixel range
  double operator()(double v) const { return a + (v - lo) / (hi - lo) * (b - a); }
};

Scale nice_scale(double lo, double hi, double a, double b, bool integer) {
  if (!(hi > lo)) {
    const double pad = std::max(std::fabs(lo) * 0.1, integer ? 1.0 : 0.5);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  if (integer) step = std::max(1.0, std::round(step));
  Scale s;
  s.lo = std::floor(lo / step + 1e-9) * step;
  s.hi = std::ceil(hi / step - 1e-9) * step;
  s.step = step;
  s.a = a;
  s.b = b;
  return s;
}

std::string open_svg(const Attrs& attrs, const Labels& labels, double width, double height) {
  std::string h = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"kvb-chart\"";
  for (const auto& [k, v] : attrs) h += " " + k + "=\"" + escape(v) + "\"";
  h += " width=\"" + px(width) + "\" height=\"" + px(height) + "\" viewBox=\"0 0 " + px(width) +
       " " + px(height) + "\" role=\"img\">\n<title>" + escape(labels.title) + "</title>\n";
  return h;
}

// Axes, grid lines, tick labels and axis labels of a plot with scales x and y.
std::string axes(const Scale& x, const Scale& y, const Labels& labels) {
  const double bottom = kTop + kPlotHeight;
  std::string h = "<g class=\"kvb-axis\" data-axis=\"x\">\n";
  for (double v = x.lo; v <= x.hi + x.step * 1e-6; v += x.step) {
    const std::string p = px(x(v));
    h += "<line class=\"kvb-grid\" x1=\"" + p + "\" y1=\"" + px(kTop) + "\" x2=\"" + p +
         "\" y2=\"" + px(bottom) + "\"/><text x=\"" + p + "\" y=\"" + px(bottom + 16) +
         "\" text-anchor=\"middle\">" + num(std::fabs(v) < x.step * 1e-9 ? 0.0 : v, "%.6g") +
         "</text>\n";
  }
  h += "<text class=\"kvb-axis-label\" x=\"" + px(kLeft + (kWidth - kLeft - kRight) / 2) +
       "\" y=\"" + px(bottom + 36) + "\" text-anchor=\"middle\">" + escape(labels.x) +
       "</text>\n</g>\n<g class=\"kvb-axis\" data-axis=\"y\">\n";
  for (double v = y.lo; v <= y.hi + y.step * 1e-6; v += y.step) {
    const std::string p = px(y(v));
    h += "<line class=\"kvb-grid\" x1=\"" + px(kLeft) + "\" y1=\"" + p + "\" x2=\"" +
         px(kWidth - kRight) + "\" y2=\"" + p + "\"/><text x=\"" + px(kLeft - 6) + "\" y=\"" +
         px(y(v) + 4) + "\" text-anchor=\"end\">" +
         num(std::fabs(v) < y.step * 1e-9 ? 0.0 : v, "%.6g") + "</text>\n";
  }
  h += "<text class=\"kvb-axis-label\" transform=\"translate(16 " + px(kTop + kPlotHeight / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + escape(labels.y) + "</text>\n</g>\n";
  h += "<rect class=\"kvb-frame\" x=\"" + px(kLeft) + "\" y=\"" + px(kTop) + "\" width=\"" +
       px(kWidth - kLeft - kRight) + "\" height=\"" + px(kPlotHeight) + "\" fill=\"none\"/>\n";
  return h;
}

// One row per series under the plot: a swatch and the name.
std::string legend(const std::vector<Series>& series, double top) {
  std::string h = "<g class=\"kvb-legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = top + kLegendRow * static_cast<double>(i);
    h += "<g class=\"kvb-legend-item\" data-series=\"" + escape(series[i].name) + "\"><rect x=\"" +
         px(kLeft) + "\" y=\"" + px(y) + "\" width=\"12\" height=\"12\" fill=\"" +
         colour(series[i].colour) + "\"/><text x=\"" + px(kLeft + 18) + "\" y=\"" + px(y + 10) +
         "\">" + escape(series[i].name) + "</text></g>\n";
  }
  return h + "</g>\n";
}

double legend_top() { return kTop + kPlotHeight + kBottom + 4; }

double height_with_legend(size_t n) {
  return legend_top() + kLegendRow * static_cast<double>(n) + 6;
}

// The range of the points' x or y, stretched to include 0 and `at_least`.
std::pair<double, double> extent(const std::vector<Series>& series, bool x_axis, double at_least) {
  double lo = 0, hi = at_least;
  for (const Series& s : series)
    for (const Point& p : s.points) {
      const double v = x_axis ? p.x : p.y;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  return {lo, hi};
}

}  // namespace

std::string escape(const std::string& s) {
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

std::string colour(size_t i) {
  static const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                         "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  return kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
}

std::string pareto_chart(const Attrs& attrs, const Labels& labels,
                         const std::vector<Series>& points, bool y_higher_better) {
  for (const Series& s : points)
    KVB_CHECK(!s.points.empty(), "pareto_chart: series '", s.name, "' has no point");
  const auto [x_lo, x_hi] = extent(points, true, 0);
  const auto [y_lo, y_hi] = extent(points, false, labels.y_max);
  const Scale x = nice_scale(x_lo, x_hi, kLeft, kWidth - kRight, false);
  const Scale y = nice_scale(y_lo, y_hi, kTop + kPlotHeight, kTop, false);
  std::string h =
      open_svg(attrs, labels, kWidth, height_with_legend(points.size())) + axes(x, y, labels);
  // The front: by x, then best y first; a point joins when it beats every point before it on y.
  std::vector<Point> by_x;
  for (const Series& s : points) by_x.push_back(s.points[0]);
  const double sign = y_higher_better ? -1.0 : 1.0;  // smaller sign * y is better
  std::sort(by_x.begin(), by_x.end(), [&](const Point& a, const Point& b) {
    return a.x != b.x ? a.x < b.x : sign * a.y < sign * b.y;
  });
  std::string front;
  double best = 0;
  for (size_t i = 0; i < by_x.size(); ++i)
    if (i == 0 || sign * by_x[i].y < best) {
      best = sign * by_x[i].y;
      front += (front.empty() ? "" : " ") + px(x(by_x[i].x)) + "," + px(y(by_x[i].y));
    }
  h += "<polyline class=\"kvb-front\" points=\"" + front + "\" fill=\"none\"/>\n";
  for (const Series& s : points) {
    const Point& p = s.points[0];
    h += "<circle class=\"kvb-series kvb-point\" data-series=\"" + escape(s.name) + "\" cx=\"" +
         px(x(p.x)) + "\" cy=\"" + px(y(p.y)) + "\" r=\"5\" fill=\"" + colour(s.colour) +
         "\"><title>" +
         escape(s.name + ": " + labels.x + " " + num(p.x) + ", " + labels.y + " " + num(p.y)) +
         "</title></circle>\n";
  }
  return h + legend(points, legend_top()) + "</svg>\n";
}

std::string line_chart(const Attrs& attrs, const Labels& labels,
                       const std::vector<Series>& series) {
  const auto [x_lo, x_hi] = extent(series, true, 1);
  const auto [y_lo, y_hi] = extent(series, false, labels.y_max);
  const Scale x = nice_scale(std::max(1.0, x_lo), x_hi, kLeft, kWidth - kRight, true);
  const Scale y = nice_scale(y_lo, y_hi, kTop + kPlotHeight, kTop, false);
  std::string h =
      open_svg(attrs, labels, kWidth, height_with_legend(series.size())) + axes(x, y, labels);
  for (const Series& s : series) {
    std::string pts, marks;
    for (const Point& p : s.points) {
      pts += (pts.empty() ? "" : " ") + px(x(p.x)) + "," + px(y(p.y));
      marks +=
          "<circle class=\"kvb-marker\" data-series=\"" + escape(s.name) + "\" cx=\"" + px(x(p.x)) +
          "\" cy=\"" + px(y(p.y)) + "\" r=\"3.5\" fill=\"" + colour(s.colour) + "\"><title>" +
          escape(s.name + ": " + labels.x + " " + num(p.x) + ", " + labels.y + " " + num(p.y)) +
          "</title></circle>\n";
    }
    h += "<polyline class=\"kvb-series\" data-series=\"" + escape(s.name) + "\" points=\"" + pts +
         "\" fill=\"none\" stroke=\"" + colour(s.colour) + "\"/>\n" + marks;
  }
  return h + legend(series, legend_top()) + "</svg>\n";
}

std::string heatmap_chart(const Attrs& attrs, const Labels& labels, const Grid& grid) {
  KVB_CHECK(grid.values.size() == grid.rows.size(), "heatmap_chart: ", grid.values.size(),
            " rows of values for ", grid.rows.size(), " row labels");
  const double w =
      (kHeatWidth - kLeft - kRight) / static_cast<double>(std::max<size_t>(1, grid.cols.size()));
  const double hgt = kHeatHeight / static_cast<double>(std::max<size_t>(1, grid.rows.size()));
  const double bottom = kTop + kHeatHeight;
  std::string h = open_svg(attrs, labels, kHeatWidth, bottom + kBottom) +
                  "<g class=\"kvb-series\" data-series=\"" + escape(grid.name) + "\">\n";
  for (size_t r = 0; r < grid.rows.size(); ++r) {
    KVB_CHECK(grid.values[r].size() == grid.cols.size(), "heatmap_chart: row ", r, " has ",
              grid.values[r].size(), " values for ", grid.cols.size(), " columns");
    for (size_t c = 0; c < grid.cols.size(); ++c) {
      const double v = std::clamp(grid.values[r][c], 0.0, 1.0);
      // red (215,48,39) -> yellow (254,224,139) -> green (26,152,80)
      const double t = v < 0.5 ? v * 2 : (v - 0.5) * 2;
      const int from[3] = {v < 0.5 ? 215 : 254, v < 0.5 ? 48 : 224, v < 0.5 ? 39 : 139};
      const int to[3] = {v < 0.5 ? 254 : 26, v < 0.5 ? 224 : 152, v < 0.5 ? 139 : 80};
      char fill[8];
      std::snprintf(fill, sizeof fill, "#%02x%02x%02x",
                    static_cast<int>(std::lround(from[0] + t * (to[0] - from[0]))),
                    static_cast<int>(std::lround(from[1] + t * (to[1] - from[1]))),
                    static_cast<int>(std::lround(from[2] + t * (to[2] - from[2]))));
      const double x0 = kLeft + w * static_cast<double>(c);
      const double y0 = kTop + hgt * static_cast<double>(r);
      h += "<rect class=\"kvb-cell\" data-row=\"" + escape(grid.rows[r]) + "\" data-col=\"" +
           escape(grid.cols[c]) + "\" data-value=\"" + num(grid.values[r][c]) + "\" x=\"" + px(x0) +
           "\" y=\"" + px(y0) + "\" width=\"" + px(w) + "\" height=\"" + px(hgt) + "\" fill=\"" +
           fill + "\"><title>" +
           escape(labels.y + " " + grid.rows[r] + ", " + labels.x + " " + grid.cols[c] + ": " +
                  num(grid.values[r][c], "%.3f")) +
           "</title></rect>\n<text class=\"kvb-cell-value\" x=\"" + px(x0 + w / 2) + "\" y=\"" +
           px(y0 + hgt / 2 + 4) + "\" text-anchor=\"middle\">" + num(grid.values[r][c], "%.2f") +
           "</text>\n";
    }
  }
  h += "</g>\n<g class=\"kvb-axis\" data-axis=\"x\">\n";
  for (size_t c = 0; c < grid.cols.size(); ++c)
    h += "<text x=\"" + px(kLeft + w * (static_cast<double>(c) + 0.5)) + "\" y=\"" +
         px(bottom + 16) + "\" text-anchor=\"middle\">" + escape(grid.cols[c]) + "</text>\n";
  h += "<text class=\"kvb-axis-label\" x=\"" + px(kLeft + (kHeatWidth - kLeft - kRight) / 2) +
       "\" y=\"" + px(bottom + 36) + "\" text-anchor=\"middle\">" + escape(labels.x) +
       "</text>\n</g>\n<g class=\"kvb-axis\" data-axis=\"y\">\n";
  for (size_t r = 0; r < grid.rows.size(); ++r)
    h += "<text x=\"" + px(kLeft - 6) + "\" y=\"" +
         px(kTop + hgt * (static_cast<double>(r) + 0.5) + 4) + "\" text-anchor=\"end\">" +
         escape(grid.rows[r]) + "</text>\n";
  h += "<text class=\"kvb-axis-label\" transform=\"translate(16 " + px(kTop + kHeatHeight / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + escape(labels.y) + "</text>\n</g>\n";
  return h + "</svg>\n";
}

}  // namespace kvb::svg
