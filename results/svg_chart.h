// Charts as inline SVG text, drawn by our own code (see results/README.md for why no charting
// library): the same input gives the same bytes, and a page that embeds them needs nothing else.
//
// Every chart's root is <svg class="kvb-chart" ...> with the caller's attributes (data-chart and
// the like) and a <title>; every series is an element of class "kvb-series" with data-series set
// to its name, so tests and scripts can find them. Colours come from a fixed palette, indexed
// by Series::colour, so a page can give one method the same colour in every chart.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace kvb::svg {

// "&<>\"'" escaped, for XML/HTML text and attribute values.
std::string escape(const std::string& s);

// Attributes of a chart's root <svg> after class="kvb-chart", in order.
using Attrs = std::vector<std::pair<std::string, std::string>>;

struct Point {
  double x = 0, y = 0;
};

struct Series {
  std::string name;
  size_t colour = 0;  // palette index
  std::vector<Point> points;
};

struct Labels {
  std::string title;  // the chart's <title>
  std::string x, y;   // axis labels
  double y_max = 0;   // the y axis reaches at least this (1 for scores); axes start at 0 or below
};

// "#rrggbb" of palette entry i (the palette repeats).
std::string colour(size_t i);

// One point per series (its first point): a <circle class="kvb-series kvb-point">. Lower x is
// better; higher y is better when `y_higher_better`, else lower. The Pareto front — the points
// no other point is as good as on both axes and better on one (of equal points, one) — is a
// <polyline class="kvb-front"> in order of x.
std::string pareto_chart(const Attrs& attrs, const Labels& labels,
                         const std::vector<Series>& points, bool y_higher_better);

// One <polyline class="kvb-series"> per series through its points (x ascending as given) with a
// <circle class="kvb-marker"> on each; x ticks are integers (turn numbers and the like).
std::string line_chart(const Attrs& attrs, const Labels& labels, const std::vector<Series>& series);

// A grid of <rect class="kvb-cell"> coloured by value in [0, 1] (red 0, yellow 0.5, green 1),
// rows top to bottom, each carrying data-row, data-col and data-value and showing its value; the
// cells are the series: <g class="kvb-series" data-series="name">.
struct Grid {
  std::string name;
  std::vector<std::string> rows, cols;      // tick labels
  std::vector<std::vector<double>> values;  // [row][col]
};
std::string heatmap_chart(const Attrs& attrs, const Labels& labels, const Grid& grid);

}  // namespace kvb::svg
