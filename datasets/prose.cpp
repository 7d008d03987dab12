#include "datasets/prose.h"

#include <cctype>

#include "datasets/rng.h"

namespace kvb {
namespace {

using Words = std::vector<std::string>;

const Words kNouns = {
    "river",       "garden",    "window",     "teacher",  "doctor",   "farmer",   "sailor",
    "village",     "mountain",  "forest",     "letter",   "market",   "bridge",   "kitchen",
    "library",     "engine",    "harbor",     "island",   "lantern",  "journey",  "winter",
    "summer",      "morning",   "evening",    "storm",    "meadow",   "castle",   "painter",
    "student",     "merchant",  "soldier",    "captain",  "neighbor", "stranger", "child",
    "grandmother", "uncle",     "friend",     "machine",  "clock",    "road",     "valley",
    "orchard",     "story",     "song",       "promise",  "secret",   "question", "answer",
    "problem",     "decision",  "company",    "factory",  "office",   "school",   "church",
    "station",     "train",     "ship",       "wagon",    "horse",    "dog",      "cat",
    "bird",        "fish",      "apple",      "bread",    "cheese",   "basket",   "blanket",
    "candle",      "mirror",    "table",      "chair",    "door",     "roof",     "wall",
    "field",       "hill",      "lake",       "coast",    "desert",   "city",     "street",
    "shop",        "book",      "map",        "compass",  "coin",     "ring",     "letterbox",
    "newspaper",   "camera",    "piano",      "violin",   "theater",  "museum",   "hospital",
    "prison",      "court",     "council",    "festival", "wedding",  "funeral",  "holiday",
    "contract",    "invention", "experiment", "theory",   "idea",     "habit",    "argument",
    "reward",      "lesson",    "memory",     "dream",    "silence",  "voice",    "shadow",
    "light"};
const Words kAdjectives = {
    "quiet",    "ancient", "bright",    "narrow",    "heavy",    "gentle",     "curious",
    "careful",  "distant", "broken",    "golden",    "silver",   "tired",      "eager",
    "patient",  "clever",  "honest",    "strange",   "familiar", "empty",      "crowded",
    "wooden",   "stone",   "frozen",    "warm",      "cold",     "green",      "red",
    "blue",     "small",   "large",     "long",      "short",    "young",      "old",
    "new",      "simple",  "difficult", "important", "ordinary", "famous",     "forgotten",
    "hidden",   "open",    "secret",    "lonely",    "busy",     "calm",       "proud",
    "humble",   "rich",    "poor",      "wise",      "foolish",  "brave",      "nervous",
    "cheerful", "serious", "generous",  "stubborn",  "modest",   "remarkable", "peculiar",
    "steady",   "sudden",  "gradual",   "pale",      "dark",     "soft",       "sharp"};
const Words kVerbsT = {
    "found",     "carried",   "opened",     "closed",   "watched",  "followed",   "built",
    "painted",   "repaired",  "sold",       "bought",   "visited",  "remembered", "forgot",
    "described", "explained", "discovered", "noticed",  "answered", "questioned", "admired",
    "ignored",   "praised",   "blamed",     "helped",   "warned",   "invited",    "thanked",
    "greeted",   "studied",   "measured",   "counted",  "wrote",    "read",       "signed",
    "lost",      "kept",      "borrowed",   "returned", "cleaned",  "moved",      "lifted",
    "pushed",    "pulled",    "covered",    "crossed",  "climbed",  "reached",    "left",
    "joined",    "planned",   "changed",    "improved", "tested",   "checked",    "collected",
    "delivered", "shared",    "copied",     "hid"};
const Words kVerbsI = {"waited",  "laughed",   "smiled",   "slept",       "worked",    "traveled",
                       "arrived", "departed",  "listened", "wondered",    "paused",    "hesitated",
                       "agreed",  "disagreed", "returned", "disappeared", "appeared",  "rested",
                       "argued",  "sang",      "danced",   "walked",      "ran",       "stayed",
                       "shouted", "whispered", "trembled", "prospered",   "struggled", "improved"};
const Words kAdverbs = {"slowly",    "quickly", "quietly",   "carefully",  "suddenly",
                        "gradually", "eagerly", "patiently", "happily",    "sadly",
                        "politely",  "boldly",  "gently",    "openly",     "secretly",
                        "rarely",    "often",   "finally",   "briefly",    "honestly",
                        "calmly",    "proudly", "nervously", "cheerfully", "seriously",
                        "easily",    "barely",  "almost",    "simply",     "warmly"};
const Words kNames = {"Anna",  "Ben",    "Clara",  "David", "Elena",  "Frank",  "Grace",  "Henry",
                      "Iris",  "Jonas",  "Karin",  "Leo",   "Maria",  "Nathan", "Olga",   "Peter",
                      "Quinn", "Rosa",   "Samuel", "Tara",  "Victor", "Wendy",  "Xavier", "Yara",
                      "Zoe",   "Martin", "Helen",  "Oscar", "Lucy",   "Arthur"};
const Words kCities = {
    "Paris",      "Tokyo",     "Lima",     "Cairo",    "Oslo",      "Madrid",     "Berlin",
    "Dublin",     "Vienna",    "Prague",   "Lisbon",   "Athens",    "Warsaw",     "Helsinki",
    "Nairobi",    "Bogota",    "Santiago", "Toronto",  "Chicago",   "Boston",     "Seattle",
    "Denver",     "Sydney",    "Perth",    "Auckland", "Mumbai",    "Delhi",      "Bangkok",
    "Hanoi",      "Manila",    "Seoul",    "Osaka",    "Beijing",   "Shanghai",   "Istanbul",
    "Tehran",     "Baghdad",   "Dakar",    "Accra",    "Lagos",     "Casablanca", "Tunis",
    "Havana",     "Quito",     "Caracas",  "Montreal", "Vancouver", "Reykjavik",  "Stockholm",
    "Copenhagen", "Amsterdam", "Brussels", "Zurich",   "Geneva",    "Milan",      "Naples",
    "Venice",     "Florence",  "Munich",   "Hamburg"};
const Words kPreps = {"near",   "behind",  "beside", "across",  "under",
                      "above",  "inside",  "beyond", "toward",  "along",
                      "around", "through", "past",   "against", "within"};
const Words kDets = {"the",   "the", "the",     "a",   "that", "this",
                     "every", "one", "another", "his", "her",  "their"};
const Words kIntros = {"In the morning", "After a while",   "Later that year",
                       "Meanwhile",      "For a long time", "Without warning",
                       "At first",       "In the end",      "Before long",
                       "That evening",   "Years later",     "By the time winter came",
                       "On most days",   "Once again",      "Even so"};
const Words kConj = {"and", "but", "so", "yet"};
const Words kSubs = {"because", "while", "although", "after",
                     "before",  "until", "since",    "as soon as"};

std::string a_or_an(const std::string& det, const std::string& next) {
  if (det != "a") return det;
  char c = static_cast<char>(std::tolower(static_cast<unsigned char>(next[0])));
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') ? "an" : "a";
}

std::string noun_phrase(Rng& r, int depth = 0) {
  switch (r.below(depth > 0 ? 4 : 6)) {
    case 0:
      return r.pick(kNames);
    case 1: {
      std::string n = r.pick(kNouns);
      return a_or_an(r.pick(kDets), n) + " " + n;
    }
    case 2:
    case 3: {
      std::string a = r.pick(kAdjectives);
      return a_or_an(r.pick(kDets), a) + " " + a + " " + r.pick(kNouns);
    }
    case 4:
      return "the " + r.pick(kNouns) + " of " + noun_phrase(r, depth + 1);
    default:
      return "the " + r.pick(kNouns) + " " + r.pick(kPreps) + " " +
             (r.below(2) ? r.pick(kCities) : noun_phrase(r, depth + 1));
  }
}

std::string verb_phrase(Rng& r) {
  switch (r.below(6)) {
    case 0:
      return r.pick(kVerbsT) + " " + noun_phrase(r);
    case 1:
      return r.pick(kVerbsT) + " " + noun_phrase(r) + " " + r.pick(kPreps) + " " +
             noun_phrase(r, 1);
    case 2:
      return r.pick(kVerbsI) + " " + r.pick(kAdverbs);
    case 3:
      return r.pick(kVerbsI) + " " + r.pick(kPreps) + " " + noun_phrase(r, 1);
    case 4:
      return "was " + std::string(r.below(3) ? "" : "very ") + r.pick(kAdjectives);
    default:
      return r.pick(kAdverbs) + " " + r.pick(kVerbsT) + " " + noun_phrase(r);
  }
}

std::string clause(Rng& r) { return noun_phrase(r) + " " + verb_phrase(r); }

}  // namespace

std::string prose_sentence(Rng& r) {
  std::string s;
  switch (r.below(7)) {
    case 0:
    case 1:
      s = clause(r);
      break;
    case 2:
      s = r.pick(kIntros) + ", " + clause(r);
      break;
    case 3:
      s = clause(r) + ", " + r.pick(kConj) + " " + clause(r);
      break;
    case 4:
      s = clause(r) + " " + r.pick(kSubs) + " " + clause(r);
      break;
    case 5:
      s = "Nobody knew why " + clause(r);
      break;
    default:
      s = "The " + r.pick(kNouns) + " that " + r.pick(kNames) + " " + r.pick(kVerbsT) + " " +
          verb_phrase(r);
      break;
  }
  s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s + (r.below(20) == 0 ? "!" : ".");
}

std::string generate_prose(int64_t words, uint64_t seed) {
  Rng r(seed);
  std::string out;
  int64_t count = 0;
  while (count < words) {
    if (!out.empty()) out += "\n\n";
    const int64_t n = r.range(3, 7);
    for (int64_t i = 0; i < n; ++i) {
      std::string s = prose_sentence(r);
      for (char c : s) count += c == ' ';
      ++count;
      out += (i ? " " : "") + s;
    }
  }
  return out;
}

const std::vector<std::string>& prose_cities() { return kCities; }
const std::vector<std::string>& prose_nouns() { return kNouns; }

}  // namespace kvb
