#include "datasets/mixture.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "datasets/prose.h"
#include "datasets/rng.h"
#include "common/check.h"

namespace kvb {
namespace {

std::string random_string(Rng& rng, int64_t n, const char* alphabet) {
  const std::string a(alphabet);
  std::string s;
  for (int64_t i = 0; i < n; ++i) s += a[rng.below(a.size())];
  return s;
}
constexpr const char* kLower = "abcdefghijklmnopqrstuvwxyz";
constexpr const char* kUpper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr const char* kDigits = "0123456789";
constexpr const char* kAlnum = "abcdefghijklmnopqrstuvwxyz0123456789";

std::string digits(Rng& rng, int64_t n) {
  return std::string(1, "123456789"[rng.below(9)]) + random_string(rng, n - 1, kDigits);
}

// A task as it is laid out: pieces of information to insert into the filler (in order of
// depth), then an optional question whose answer follows it at the end of the document, or an
// answer inside the last piece (copy).
struct Planned {
  MixTask task;
  std::vector<std::string> pieces;
  // (question, answer) pairs, each "\n\n" + question + answer in the tail; key-value lists may
  // have several (kv_asks), copy has none.
  std::vector<std::pair<std::string, std::string>> qas;
  std::string inline_answer;          // copy: the answer is this suffix of the last piece
};

Planned plan_task(MixTask t, Rng& rng, std::vector<std::string>& used_cities,
                  const MixtureWeights& w) {
  Planned p{t, {}, {}, {}};
  switch (t) {
    case MixTask::kNeedle: {
      std::string city;
      do city = rng.pick(prose_cities());
      while (std::find(used_cities.begin(), used_cities.end(), city) != used_cities.end() &&
             used_cities.size() < prose_cities().size());
      used_cities.push_back(city);
      const std::string number = digits(rng, 7);
      p.pieces = {"The special magic number for " + city + " is " + number + "."};
      p.qas = {{"What is the special magic number for " + city + "? The special magic number for " +
                    city + " is",
                " " + number + "."}};
      break;
    }
    case MixTask::kPasskey: {
      const std::string key = digits(rng, 5);
      p.pieces = {"The pass key is " + key + ". Remember it. " + key + " is the pass key."};
      p.qas = {{"What is the pass key? The pass key is", " " + key + "."}};
      break;
    }
    case MixTask::kKv: {
      const int64_t n = rng.range(3, 8);
      const int64_t ask = rng.range(0, n - 1);
      std::string block = "Key-value pairs:";
      std::vector<std::pair<std::string, std::string>> pairs;
      for (int64_t i = 0; i < n; ++i) {
        std::string k = random_string(rng, 6, kLower);  // key, then value: the draws' order
        std::string v = random_string(rng, 6, kAlnum);
        pairs.emplace_back(std::move(k), std::move(v));
        block += std::string(i ? ", " : " ") + pairs.back().first + ": " + pairs.back().second;
      }
      p.pieces = {block + "."};
      auto qa = [&](int64_t i) {
        const std::string& key = pairs[static_cast<size_t>(i)].first;
        return std::pair{"What is the value of key " + key + "? " +
                             (w.kv_ask_by_key ? key + ":" : "The value of key " + key + " is"),
                         " " + pairs[static_cast<size_t>(i)].second + "."};
      };
      p.qas = {qa(ask)};
      if (w.kv_asks > 1) {  // further distinct keys, drawn only then (1 keeps the stream)
        std::vector<int64_t> others;
        for (int64_t i = 0; i < n; ++i)
          if (i != ask) others.push_back(i);
        rng.shuffle(others);
        for (int64_t i = 0; i < std::min<int64_t>(w.kv_asks - 1, n - 1); ++i)
          p.qas.push_back(qa(others[static_cast<size_t>(i)]));
      }
      break;
    }
    case MixTask::kVars: {
      const std::string a = random_string(rng, 5, kUpper), b = random_string(rng, 5, kUpper);
      const std::string value = digits(rng, 5);
      p.pieces = {"VAR " + a + " = " + value + ".", "VAR " + b + " = VAR " + a + "."};
      p.qas = {{"What is the value of VAR " + b + "? VAR " + b + " =", " " + value + "."}};
      break;
    }
    case MixTask::kPrefix: {
      const int64_t n = rng.range(3, 6);
      const int64_t ask = rng.range(0, n - 1);
      std::string block = "Special strings:", target;
      for (int64_t i = 0; i < n; ++i) {
        const std::string s = random_string(rng, 12, kLower);
        block += std::string(i ? ", " : " ") + s;
        if (i == ask) target = s;
      }
      p.pieces = {block + "."};
      p.qas = {{"Which special string starts with " + target.substr(0, 4) + "? It is",
                " " + target + "."}};
      break;
    }
    case MixTask::kCopy: {
      const std::string s = random_string(rng, rng.range(8, 32), kAlnum);
      p.pieces = {"Copy this: " + s + " =>" + " " + s + "."};
      p.inline_answer = " " + s + ".";
      break;
    }
  }
  return p;
}

MixTask draw_task(Rng& rng, const MixtureWeights& w, const std::vector<MixTask>& only) {
  if (!only.empty()) return only[rng.below(only.size())];
  const double ws[] = {w.needle, w.passkey, w.kv, w.vars, w.prefix, w.copy};
  double total = 0;
  for (double x : ws) total += x;
  KVB_CHECK(total > 0, "mixture: all task weights are zero");
  double u = rng.uniform() * total;
  for (int i = 0; i < 6; ++i) {
    if (u < ws[i]) return static_cast<MixTask>(i);
    u -= ws[i];
  }
  return MixTask::kCopy;
}

// Prose of exactly `n` bytes (sentences joined by spaces, the last one cut).
std::string prose_bytes(Rng& rng, int64_t n) {
  std::string s;
  while (static_cast<int64_t>(s.size()) < n) s += (s.empty() ? "" : " ") + prose_sentence(rng);
  s.resize(static_cast<size_t>(std::max<int64_t>(0, n)));
  return s;
}

}  // namespace

const char* mix_task_name(MixTask t) {
  switch (t) {
    case MixTask::kNeedle: return "needle";
    case MixTask::kPasskey: return "passkey";
    case MixTask::kKv: return "kv";
    case MixTask::kVars: return "vars";
    case MixTask::kPrefix: return "prefix";
    case MixTask::kCopy: return "copy";
  }
  return "?";
}

std::optional<MixTask> parse_mix_task(const std::string& name) {
  for (int i = 0; i < 6; ++i)
    if (name == mix_task_name(static_cast<MixTask>(i))) return static_cast<MixTask>(i);
  return std::nullopt;
}

std::string mix_task_names(bool with_questions_only) {
  std::string s;
  for (int i = 0; i < 6; ++i) {
    const auto t = static_cast<MixTask>(i);
    if (with_questions_only && t == MixTask::kCopy) continue;
    s += std::string(s.empty() ? "" : ", ") + mix_task_name(t);
  }
  return s;
}

std::string make_prose_document(int64_t bytes, uint64_t seed) {
  Rng rng(seed);
  return prose_bytes(rng, bytes);
}

MixDocument make_mix_document(int64_t bytes, uint64_t seed, const MixtureWeights& w,
                              const std::vector<MixTask>& only, double depth) {
  Rng rng(seed);
  int64_t n_tasks = depth >= 0 ? 1 : rng.range(w.min_tasks, std::max(w.min_tasks, w.max_tasks));
  std::vector<Planned> tasks;
  std::vector<std::string> cities;
  bool passkey = false;
  for (int64_t i = 0; i < n_tasks; ++i) {
    MixTask t = draw_task(rng, w, only);
    if (t == MixTask::kPasskey && passkey) continue;  // one pass key per document
    passkey |= t == MixTask::kPasskey;
    tasks.push_back(plan_task(t, rng, cities, w));
  }
  rng.shuffle(tasks);  // order of the questions at the end
  // Drop tasks until the information and questions leave room for some filler.
  auto overhead = [&] {
    int64_t o = 0;
    for (const Planned& p : tasks) {
      for (const auto& piece : p.pieces) o += static_cast<int64_t>(piece.size()) + 1;
      for (const auto& [q, a] : p.qas) o += 2 + static_cast<int64_t>(q.size() + a.size());
    }
    return o;
  };
  // Extra tasks go when they would crowd out the filler; a single task must fit.
  while (tasks.size() > 1 && overhead() * 5 > bytes * 3) tasks.pop_back();
  if (only.empty() && overhead() + 8 > bytes) tasks.clear();  // drawn, not asked for: plain prose
  KVB_INPUT_CHECK(overhead() + 8 <= bytes, "mixture: a document of ", bytes,
                  " bytes is too short for its task (", overhead(), " bytes)");

  const int64_t filler_len = bytes - overhead();
  const std::string filler = prose_bytes(rng, filler_len);
  // Sentence starts of the filler (where information may be inserted).
  std::vector<int64_t> starts = {0};
  for (size_t i = 1; i + 1 < filler.size(); ++i)
    if ((filler[i - 1] == '.' || filler[i - 1] == '!') && filler[i] == ' ')
      starts.push_back(static_cast<int64_t>(i) + 1);

  struct Insert {
    int64_t at;
    size_t task, piece;
  };
  std::vector<Insert> inserts;
  std::vector<double> task_depth(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) {
    const double d0 = depth >= 0 ? depth : rng.uniform();
    task_depth[t] = d0;
    double d = d0;
    for (size_t k = 0; k < tasks[t].pieces.size(); ++k) {
      const double target = d * static_cast<double>(filler.size());
      int64_t best = starts[0];
      for (int64_t s : starts)
        if (std::abs(static_cast<double>(s) - target) < std::abs(static_cast<double>(best) - target))
          best = s;
      inserts.push_back({best, t, k});
      d = d + (1.0 - d) * rng.uniform();  // later pieces (variable chains) come after
    }
  }
  std::stable_sort(inserts.begin(), inserts.end(),
                   [](const Insert& a, const Insert& b) { return a.at < b.at; });

  MixDocument doc;
  std::vector<int64_t> piece_at(tasks.size(), -1);  // offset of each task's last piece
  int64_t from = 0;
  for (const Insert& ins : inserts) {
    doc.text.append(filler, static_cast<size_t>(from), static_cast<size_t>(ins.at - from));
    from = ins.at;
    if (tasks[ins.task].pieces.size() == ins.piece + 1)
      piece_at[ins.task] = static_cast<int64_t>(doc.text.size());
    doc.text += tasks[ins.task].pieces[ins.piece] + " ";
  }
  doc.text.append(filler, static_cast<size_t>(from), std::string::npos);
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Planned& p = tasks[t];
    const double where = static_cast<double>(piece_at[t]) / static_cast<double>(std::max<int64_t>(1, bytes));
    if (!p.inline_answer.empty()) {
      const int64_t end = piece_at[t] + static_cast<int64_t>(p.pieces.back().size());
      doc.answers.push_back({p.task, end - static_cast<int64_t>(p.inline_answer.size()), end, where});
    }
  }
  doc.body_bytes = static_cast<int64_t>(doc.text.size());
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Planned& p = tasks[t];
    for (const auto& [question, answer] : p.qas) {
      doc.questions.push_back({p.task, question, answer});
      doc.text += "\n\n" + question;
      const int64_t b = static_cast<int64_t>(doc.text.size());
      doc.text += answer;
      doc.answers.push_back({p.task, b, static_cast<int64_t>(doc.text.size()),
                             depth >= 0 ? depth : task_depth[t]});
    }
  }
  KVB_CHECK(static_cast<int64_t>(doc.text.size()) == bytes, "mixture: built ", doc.text.size(),
            " bytes instead of ", bytes);
  return doc;
}

}  // namespace kvb
