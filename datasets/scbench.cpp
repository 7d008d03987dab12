#include "datasets/scbench.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "common/check.h"
#include "common/error_text.h"
#include "common/json_reader.h"
#include "datasets/mixture.h"
#include "datasets/prose.h"
#include "datasets/rng.h"
#include "datasets/text.h"

namespace kvb {
namespace {

std::string random_letters(Rng& r, int64_t n, bool upper) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) s += static_cast<char>((upper ? 'A' : 'a') + r.below(26));
  return s;
}

// Distinct indices [0, n) in random order, `k` of them.
std::vector<int64_t> pick_distinct(Rng& r, int64_t n, int64_t k) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  r.shuffle(all);
  all.resize(static_cast<size_t>(std::min(k, n)));
  return all;
}

}  // namespace

ScMetric parse_sc_metric(const std::string& s) {
  if (s == "substring") return ScMetric::kSubstring;
  if (s == "string_match_all") return ScMetric::kStringMatchAll;
  if (s == "first_int") return ScMetric::kFirstInt;
  throw InputError("unknown metric '" + s + "' (known: substring, string_match_all, first_int)");
}

std::string sc_metric_name(ScMetric m) {
  switch (m) {
    case ScMetric::kSubstring:
      return "substring";
    case ScMetric::kStringMatchAll:
      return "string_match_all";
    default:
      return "first_int";
  }
}

double score_sc_turn(ScMetric m, const std::string& pred, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0;
  if (m == ScMetric::kSubstring) return pred.find(answers[0]) != std::string::npos ? 1.0 : 0.0;
  if (m == ScMetric::kStringMatchAll) {
    double hit = 0;
    for (const auto& a : answers) hit += pred.find(a) != std::string::npos;
    return hit / static_cast<double>(answers.size());
  }
  // First integer (optional minus sign) in the prediction against the gold integer.
  for (size_t i = 0; i < pred.size(); ++i) {
    if (pred[i] < '0' || pred[i] > '9') continue;
    size_t j = i;
    while (j < pred.size() && pred[j] >= '0' && pred[j] <= '9') ++j;
    std::string num = (i > 0 && pred[i - 1] == '-' ? "-" : "") + pred.substr(i, j - i);
    std::string gold = answers[0];
    auto strip = [](std::string s) {
      bool neg = !s.empty() && s[0] == '-';
      s = s.substr(neg ? 1 : 0);
      size_t z = s.find_first_not_of('0');
      s = z == std::string::npos ? "0" : s.substr(z);
      return (neg && s != "0" ? "-" : "") + s;
    };
    return strip(num) == strip(gold) ? 1.0 : 0.0;
  }
  return 0;
}

std::string random_uuid(Rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    int v = static_cast<int>(r.below(16));
    if (i == 12) v = 4;
    if (i == 16) v = 8 + (v & 3);
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    s += hex[v];
  }
  return s;
}

ScTask generate_mixture_task(int64_t samples, int64_t bytes, int64_t turns,
                             const std::vector<std::string>& tasks, uint64_t seed) {
  std::vector<MixTask> only;
  for (const std::string& n : tasks) {
    const std::optional<MixTask> t = parse_mix_task(n);
    KVB_INPUT_CHECK(t.has_value(), "mixture: unknown task '", n,
                    "' (", mix_task_names(true), ")");
    KVB_INPUT_CHECK(*t != MixTask::kCopy, "mixture: 'copy' has no question to ask");
    only.push_back(*t);
  }
  KVB_INPUT_CHECK(!only.empty(), "mixture: no tasks");
  MixtureWeights w;
  w.min_tasks = w.max_tasks = turns;
  ScTask t{"mixture", ScMetric::kSubstring, {}};
  for (int64_t s = 0; s < samples; ++s) {
    const MixDocument doc =
        make_mix_document(bytes, derive_seed(seed, "mixture/" + std::to_string(s)), w, only);
    ScSample x{"mixture-" + std::to_string(s),
               doc.text.substr(0, static_cast<size_t>(doc.body_bytes)), {}};
    for (const MixQuestion& q : doc.questions) {
      // " 12345." -> the value is what must appear in the prediction.
      std::string value = q.answer.substr(1, q.answer.size() - 2);
      x.turns.push_back({q.question, {value}, q.answer});
    }
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask generate_kv_retrieval(int64_t samples, int64_t pairs, int64_t turns, uint64_t seed) {
  ScTask t{"kv", ScMetric::kSubstring, {}};
  for (int64_t s = 0; s < samples; ++s) {
    Rng r(derive_seed(seed, "kv/" + std::to_string(s)));
    std::vector<std::pair<std::string, std::string>> kv;
    for (int64_t i = 0; i < pairs; ++i) kv.emplace_back(random_uuid(r), random_uuid(r));
    ScSample x{"kv-" + std::to_string(s),
               "Extract the value corresponding to the specified key in the JSON object "
               "below.\n\nJSON data:\n{",
               {}};
    for (size_t i = 0; i < kv.size(); ++i)
      x.context +=
          std::string(i ? ",\n " : "") + "\"" + kv[i].first + "\": \"" + kv[i].second + "\"";
    x.context += "}";
    for (int64_t i : pick_distinct(r, pairs, turns))
      x.turns.push_back({"Key: \"" + kv[static_cast<size_t>(i)].first +
                             "\"\nThe value associated with the specified key is: ",
                         {kv[static_cast<size_t>(i)].second}});
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask generate_prefix_suffix(int64_t samples, int64_t strings, int64_t turns, uint64_t seed) {
  ScTask t{"prefix_suffix", ScMetric::kSubstring, {}};
  for (int64_t s = 0; s < samples; ++s) {
    Rng r(derive_seed(seed, "prefix_suffix/" + std::to_string(s)));
    std::vector<std::string> v;
    std::set<std::string> ends;
    while (static_cast<int64_t>(v.size()) < strings) {
      std::string w = random_letters(r, r.range(16, 28), false);
      // Prefix and suffix (4 letters each) identify one string.
      if (!ends.insert(w.substr(0, 4) + "|" + w.substr(w.size() - 4)).second) continue;
      v.push_back(w);
    }
    ScSample x{
        "prefix_suffix-" + std::to_string(s),
        "There is a list of strings below. Each question asks for the string that begins with a "
        "given prefix and ends with a given suffix.\n\n",
        {}};
    for (size_t i = 0; i < v.size(); ++i) x.context += v[i] + "\n";
    for (int64_t i : pick_distinct(r, strings, turns)) {
      const std::string& w = v[static_cast<size_t>(i)];
      x.turns.push_back({"Which string begins with \"" + w.substr(0, 4) + "\" and ends with \"" +
                             w.substr(w.size() - 4) + "\"? Answer: ",
                         {w}});
    }
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask generate_variable_tracing(int64_t samples, int64_t chains, int64_t hops, int64_t noise,
                                 int64_t turns, uint64_t seed) {
  ScTask t{"vt", ScMetric::kStringMatchAll, {}};
  for (int64_t s = 0; s < samples; ++s) {
    Rng r(derive_seed(seed, "vt/" + std::to_string(s)));
    std::set<std::string> used;
    auto fresh = [&] {
      for (;;) {
        std::string n = random_letters(r, 5, true);
        if (used.insert(n).second) return n;
      }
    };
    std::vector<std::pair<std::string, std::vector<std::string>>> chain_info;  // value, variables
    std::set<int64_t> values;
    for (int64_t c = 0; c < chains; ++c) {
      int64_t val = 0;
      do val = r.range(10000, 99999);
      while (!values.insert(val).second);
      std::vector<std::string> vars{fresh()};
      for (int64_t h = 1; h <= hops; ++h) {
        vars.push_back(fresh());
      }
      chain_info.emplace_back(std::to_string(val), vars);
    }
    // Interleave the assignments (each chain in order) with prose noise.
    std::vector<std::string> body;
    for (int64_t i = 0; i < noise; ++i) body.push_back(prose_sentence(r));
    for (const auto& [val, vars] : chain_info) {
      int64_t lo = 0;
      for (size_t h = 0; h < vars.size(); ++h) {
        std::string line =
            h == 0 ? "VAR " + vars[0] + " = " + val : "VAR " + vars[h] + " = VAR " + vars[h - 1];
        int64_t at = r.range(lo, static_cast<int64_t>(body.size()));
        body.insert(body.begin() + at, line + ".");
        lo = at + 1;
      }
    }
    ScSample x{
        "vt-" + std::to_string(s),
        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n",
        {}};
    for (const auto& b : body) x.context += b + "\n";
    for (int64_t i : pick_distinct(r, chains, turns)) {
      const auto& [val, vars] = chain_info[static_cast<size_t>(i)];
      x.turns.push_back({"Question: Find all variables that are assigned the value " + val +
                             " in the text above. Answer: According to the chain(s) of variable "
                             "assignment in the "
                             "text above, " +
                             std::to_string(vars.size()) + " variables are assigned the value " +
                             val + ", they are: ",
                         vars});
    }
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask generate_math_find(int64_t samples, int64_t numbers, int64_t turns, uint64_t seed) {
  ScTask t{"math_find", ScMetric::kFirstInt, {}};
  for (int64_t s = 0; s < samples; ++s) {
    Rng r(derive_seed(seed, "math_find/" + std::to_string(s)));
    std::vector<int64_t> v;
    for (int64_t i = 0; i < numbers; ++i) v.push_back(r.range(-999, 999));
    ScSample x{"math_find-" + std::to_string(s), "Here is a list of numbers:\n[", {}};
    for (size_t i = 0; i < v.size(); ++i) x.context += (i ? ", " : "") + std::to_string(v[i]);
    x.context += "]";
    const int64_t mx = *std::max_element(v.begin(), v.end()),
                  mn = *std::min_element(v.begin(), v.end());
    for (int64_t i = 0; i < turns; ++i) {
      const bool largest = i % 2 == 0;
      x.turns.push_back({std::string("What is the ") + (largest ? "largest" : "smallest") +
                             " number in the list above? Answer: The " +
                             (largest ? "largest" : "smallest") + " number is ",
                         {std::to_string(largest ? mx : mn)}});
    }
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask generate_icl_classification(int64_t samples, int64_t shots, int64_t classes, int64_t turns,
                                   uint64_t seed) {
  ScTask t{"icl", ScMetric::kSubstring, {}};
  const auto& nouns = prose_nouns();
  KVB_INPUT_CHECK(classes >= 2 && classes * 6 <= static_cast<int64_t>(nouns.size()),
                  "scbench_icl: classes must be in [2, ", nouns.size() / 6, "]");
  for (int64_t s = 0; s < samples; ++s) {
    Rng r(derive_seed(seed, "icl/" + std::to_string(s)));
    // Each class is a label plus six keywords of its own; an example mentions two keywords of
    // its class among prose filler. Labels are arbitrary words, so only the shots define them.
    std::vector<int64_t> kw = pick_distinct(r, static_cast<int64_t>(nouns.size()), classes * 6);
    std::vector<std::string> labels;
    for (int64_t c = 0; c < classes; ++c) labels.push_back(random_letters(r, 6, false));
    auto example = [&](int64_t c) {
      std::string a = nouns[static_cast<size_t>(
          kw[static_cast<size_t>(c * 6 + static_cast<int64_t>(r.below(6)))])];
      std::string b = nouns[static_cast<size_t>(
          kw[static_cast<size_t>(c * 6 + static_cast<int64_t>(r.below(6)))])];
      return "Someone mentioned the " + a + " and the " + b + ". " + prose_sentence(r);
    };
    ScSample x{"icl-" + std::to_string(s),
               "Classify each text into one of the labels, as in the examples.\n\n",
               {}};
    for (int64_t i = 0; i < shots; ++i) {
      int64_t c = static_cast<int64_t>(r.below(static_cast<uint64_t>(classes)));
      x.context += "Text: " + example(c) + "\nLabel: " + labels[static_cast<size_t>(c)] + "\n\n";
    }
    for (int64_t i = 0; i < turns; ++i) {
      int64_t c = static_cast<int64_t>(r.below(static_cast<uint64_t>(classes)));
      x.turns.push_back({"Text: " + example(c) + "\nLabel: ", {labels[static_cast<size_t>(c)]}});
    }
    t.samples.push_back(std::move(x));
  }
  return t;
}

ScTask load_scbench_jsonl(const std::string& path, ScMetric metric, int64_t max_samples) {
  std::ifstream in(path, std::ios::binary);
  KVB_INPUT_CHECK(in.good(), one_line(path), ": cannot open file");
  check_dataset_file_size(path);
  ScTask t{"jsonl", metric, {}};
  std::string line;
  int64_t ln = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    // Each line is a document of its own, read through the one JSON layer (depth, duplicate
    // keys and number range refused) and named "<path>:<line>".
    const std::string source = path + ":" + std::to_string(ln);
    const nlohmann::json j = parse_json(line, source);
    const JsonNode root(j, source, "$");
    root.object();
    ScSample x;
    if (auto id = root.find("id")) {
      if (id->is_string())
        x.id = id->str();
      else if (id->is_number())
        x.id = std::to_string(id->integer());
      else
        id->expected("a string or an integer");
    } else {
      x.id = std::to_string(ln);
    }
    x.context = root.at("context").str();
    const JsonNode turns = root.at("multi_turns");
    if (!turns.is_array() || turns.size() == 0 ||
        static_cast<int64_t>(turns.size()) > kMaxJsonlTurns)
      turns.expected("a non-empty array of at most " + std::to_string(kMaxJsonlTurns) + " turns");
    for (const JsonNode& tj : turns.items()) {
      tj.object();
      ScTurn turn{tj.at("input").str(), {}};
      const JsonNode answer = tj.at("answer");
      auto add = [&](const JsonNode& a) {
        if (a.is_string())
          turn.answers.push_back(a.str());
        else if (a.raw().is_number_integer() || a.raw().is_number_unsigned())
          turn.answers.push_back(std::to_string(a.integer()));
        else if (a.is_number())
          turn.answers.push_back(a.raw().dump());
        else
          a.expected("a string, a number or a list of them");
      };
      if (answer.is_array()) {
        if (answer.size() == 0 || static_cast<int64_t>(answer.size()) > kMaxJsonlAnswers)
          answer.expected("a string, a number or a list of 1 to " +
                          std::to_string(kMaxJsonlAnswers) + " of them");
        for (const JsonNode& a : answer.items()) add(a);
      } else {
        add(answer);
      }
      x.turns.push_back(std::move(turn));
    }
    t.samples.push_back(std::move(x));
    if (max_samples > 0 && static_cast<int64_t>(t.samples.size()) >= max_samples) break;
  }
  KVB_INPUT_CHECK(!t.samples.empty(), one_line(path), ": no samples");
  return t;
}

}  // namespace kvb
