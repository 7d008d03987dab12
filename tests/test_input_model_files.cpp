// Malformed model files (issue 20): config.json, generation_config.json, tokenizer.json,
// tokenizer_config.json, model.safetensors (and its sharded index) and llama2.c checkpoints.
// Through the real binary, every case must end with exit code 2 and exactly one line on stderr
// that names the file and the problem: never "internal error" (exit 1), a crash, a hang, or a
// second line. Each kind of failure is run through the binary at least once; the longer tables
// of cases (every size limit, every unsupported value) are also checked in-process, on the
// kvb::InputError the binary would print, so that the suite stays fast.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/check.h"
#include "common/json_io.h"
#include "harness/model/llama2c.h"
#include "harness/model/model.h"
#include "harness/tokenizer/tokenizer.h"
#include "tests/test_util.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

ModelConfig small_config() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 258;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.max_position = 64;
  c.tie_word_embeddings = true;
  return c;
}

// Exit 2, one line, the file named, the problem named, no "internal error".
void expect_refused(const test::CmdResult& r, const std::string& file, const std::string& problem) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("kvbench: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(file), std::string::npos) << "'" << file << "' not in: " << r.err;
  EXPECT_NE(r.err.find(problem), std::string::npos) << "'" << problem << "' not in: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

// The same promise in-process: `f` throws kvb::InputError, one line, starting with `file`.
void expect_input_error(const std::function<void()>& f, const std::string& file,
                        const std::string& problem) {
  try {
    f();
    ADD_FAILURE() << "no error; expected '" << problem << "'";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind(file + ": ", 0), 0u) << "'" << file << "' does not start: " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "'" << problem << "' not in: " << msg;
  }
}

class ModelFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_model_ = tmp_.path("m");
    Model::random(small_config(), 1).save(dir_model_);
    // The reference model's byte-level tokenizer: ids 0..257, as small_config's vocab.
    tokenizer_text_ = test::slurp(test::source_path("models/kvb-ref-s/tokenizer.json"));
    write_file(tok_path(), tokenizer_text_);
  }
  std::string config_path() const { return dir_model_ + "/config.json"; }
  std::string tok_path() const { return dir_model_ + "/tokenizer.json"; }
  std::string st_path() const { return dir_model_ + "/model.safetensors"; }

  test::CmdResult info() { return test::run_kvbench("info --model " + test::q(dir_model_)); }
  test::CmdResult generate() {
    return test::run_kvbench("generate --model " + test::q(dir_model_) +
                             " --prompt hi --max-new-tokens 2");
  }
  test::CmdResult tokenize(const std::string& tokenizer, const std::string& text = "hello") {
    return test::run_kvbench("tokenize --tokenizer " + test::q(tokenizer) + " --text " +
                             test::q(text));
  }
  void write_config(const json& j) { write_file(config_path(), j.dump()); }
  // small_config's config.json with `key` set to `value` (given as JSON text).
  void write_config_with(const std::string& key, const std::string& value) {
    json j = small_config().to_json();
    j.erase(key);
    std::string text = j.dump();
    text.insert(1, "\"" + key + "\": " + value + ", ");
    write_file(config_path(), text);
  }
  // The unedited tokenizer.json.
  json tokenizer_json() const { return json::parse(tokenizer_text_); }

  void expect_config_error(const std::string& problem) {
    expect_input_error([&] { load_model_config(dir_model_); }, config_path(), problem);
  }
  void expect_tokenizer_error(const std::string& path, const std::string& problem) {
    expect_input_error([&] { load_tokenizer(path); }, path, problem);
  }

  test::TempDir tmp_;
  std::string dir_model_;
  std::string tokenizer_text_;
};

// The setup itself is valid: info and generate succeed, so every refusal below is the edit's.
TEST_F(ModelFiles, ValidDirectoryIsAccepted) {
  auto r = info();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("vocab_size: 258"), std::string::npos) << r.out;
  r = generate();
  ASSERT_EQ(r.code, 0) << r.err;
  r = tokenize(tok_path());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "[256,104,101,108,108,111]\n");
}

TEST_F(ModelFiles, DeepNestingIsRefused) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  write_file(config_path(), deep);
  expect_refused(info(), config_path(), "nesting deeper than 64 levels");
  expect_refused(generate(), config_path(), "nesting deeper than 64 levels");
  write_config_with("rope_scaling", deep);
  expect_refused(info(), config_path(), "nesting deeper than 64 levels");

  write_config(small_config().to_json());
  write_file(tok_path(), "{\"model\": " + deep + "}");
  expect_refused(tokenize(tok_path()), tok_path(), "nesting deeper than 64 levels");
  expect_refused(generate(), tok_path(), "nesting deeper than 64 levels");
}

TEST_F(ModelFiles, NumbersBeyondDoubleAreRefused) {
  write_config_with("vocab_size", "1e999");
  expect_refused(info(), config_path(), "number overflow parsing");
  write_config_with("rope_theta", "-1e999");
  expect_refused(info(), config_path(), "number overflow parsing");
  write_config(small_config().to_json());
  json t = tokenizer_json();
  std::string text = t.dump();
  const std::string key = "\"<s>\":256";
  ASSERT_NE(text.find(key), std::string::npos);
  text.replace(text.find(key), key.size(), "\"<s>\":1e999");
  write_file(tok_path(), text);
  expect_refused(tokenize(tok_path()), tok_path(), "number overflow parsing");
}

TEST_F(ModelFiles, WrongJsonTypesNameFileFieldExpectedAndGot) {
  write_config_with("hidden_size", "\"32\"");
  expect_refused(info(), config_path(),
                 "hidden_size: expected an integer in [1, 65536], got a string \"32\"");
  write_config_with("tie_word_embeddings", "\"yes\"");
  expect_refused(generate(), config_path(),
                 "tie_word_embeddings: expected a boolean, got a string \"yes\"");
  write_config_with("num_hidden_layers", "2.5");
  expect_config_error("num_hidden_layers: expected an integer in [1, 1024], got a number 2.5");
  write_config_with("architectures", "\"LlamaForCausalLM\"");
  expect_config_error("architectures: expected a list");
  write_config_with("rope_scaling", "[1]");
  expect_config_error("rope_scaling: expected an object, got an array");
  write_config_with("eos_token_id", "{}");
  expect_config_error("eos_token_id: expected a token id");
  write_config_with("torch_dtype", "16");
  expect_config_error("torch_dtype: expected a string, got an integer 16");
  write_file(config_path(), "[1, 2]");
  expect_config_error("(top level): expected an object, got an array");

  write_config(small_config().to_json());
  json t = tokenizer_json();
  t["model"]["vocab"]["a"] = "x";
  write_file(tok_path(), t.dump());
  expect_refused(tokenize(tok_path()), tok_path(),
                 "model.vocab.a: expected an integer in [0, 1048575], got a string \"x\"");
  t = tokenizer_json();
  t["added_tokens"][0]["special"] = 1;
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(),
                         "added_tokens[0].special: expected a boolean, got an integer 1");
  t = tokenizer_json();
  t["decoder"]["decoders"] = "x";
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(), "decoder.decoders: expected an array, got a string \"x\"");
  t = tokenizer_json();
  t["post_processor"]["special_tokens"]["<s>"]["ids"] = {"256"};
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(),
                         "post_processor.special_tokens.<s>.ids[0]: expected an integer");
  t = tokenizer_json();
  t["post_processor"]["pair"][2]["Sequence"] = "B";
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(),
                         "post_processor.pair[2].Sequence: expected an object, got a string \"B\"");
  t = tokenizer_json();
  t["model"]["merges"] = {{"a"}};
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(), "model.merges[0]: expected a string \"a b\" or a pair");
  write_file(tok_path(), tokenizer_text_);
  write_file(dir_model_ + "/tokenizer_config.json", R"({"add_bos_token": "no"})");
  expect_refused(generate(), dir_model_ + "/tokenizer_config.json",
                 "add_bos_token: expected a boolean, got a string \"no\"");
}

TEST_F(ModelFiles, DuplicateKeysAreRefused) {
  write_config_with("hidden_size", "32, \"hidden_size\": 64");
  expect_refused(info(), config_path(), "duplicate key \"hidden_size\"");
  write_config(small_config().to_json());
  write_file(dir_model_ + "/generation_config.json", R"({"eos_token_id": 2, "eos_token_id": 3})");
  expect_input_error([&] { load_model_config(dir_model_); }, dir_model_ + "/generation_config.json",
                     "duplicate key \"eos_token_id\"");
  fs::remove(dir_model_ + "/generation_config.json");
  std::string text = tokenizer_text_;
  text.insert(text.find('{') + 1, "\"normalizer\": null, ");
  write_file(tok_path(), text);
  expect_refused(tokenize(tok_path()), tok_path(), "duplicate key \"normalizer\"");
}

TEST_F(ModelFiles, EverySizeHasAMaximum) {
  const struct {
    const char* key;
    const char* value;
    const char* problem;
  } cases[] = {
      {"vocab_size", "1048577", "vocab_size: expected an integer in [1, 1048576]"},
      {"vocab_size", "0", "vocab_size: expected an integer in [1, 1048576]"},
      {"hidden_size", "65537", "hidden_size: expected an integer in [1, 65536]"},
      {"intermediate_size", "262145", "intermediate_size: expected an integer in [1, 262144]"},
      {"num_hidden_layers", "1025", "num_hidden_layers: expected an integer in [1, 1024]"},
      {"num_attention_heads", "1025", "num_attention_heads: expected an integer in [1, 1024]"},
      {"num_key_value_heads", "-2", "num_key_value_heads: expected an integer in [1, 1024]"},
      {"head_dim", "2048", "head_dim: expected an integer in [2, 1024]"},
      {"max_position_embeddings", "16777217",
       "max_position_embeddings: expected an integer in [1, 16777216]"},
      {"max_position_embeddings", "99999999999999999999", "max_position_embeddings: expected"},
      {"rope_theta", "1e13", "rope_theta: expected a number in [1, 1e+12]"},
      {"rms_norm_eps", "0", "rms_norm_eps: expected a number in [1e-12, 1]"},
      {"rms_norm_eps", "2", "rms_norm_eps: expected a number in [1e-12, 1]"},
      {"sliding_window", "-1", "sliding_window: expected an integer"},
      {"eos_token_id", "258", "eos_token_id: expected an integer in [0, 257]"},
      {"bos_token_id", "[1, -1]", "bos_token_id[1]: expected an integer in [0, 257]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " = " + c.value);
    write_config_with(c.key, c.value);
    expect_config_error(c.problem);
  }
  // A few through the binary, which must print exactly that.
  write_config_with("vocab_size", "1048577");
  expect_refused(info(), config_path(), "vocab_size: expected an integer in [1, 1048576]");
  write_config_with("num_hidden_layers", "1025");
  expect_refused(generate(), config_path(), "num_hidden_layers: expected an integer in [1, 1024]");
  write_config_with("max_position_embeddings", "16777217");
  expect_refused(info(), config_path(),
                 "max_position_embeddings: expected an integer in [1, 16777216]");
  // generation_config.json's ids are checked against the same vocabulary.
  write_config(small_config().to_json());
  write_file(dir_model_ + "/generation_config.json", R"({"eos_token_id": [2, 5000]})");
  expect_refused(info(), dir_model_ + "/generation_config.json",
                 "eos_token_id[1]: expected an integer in [0, 257]");
}

TEST_F(ModelFiles, CrossChecksAreRefused) {
  write_config_with("num_key_value_heads", "3");
  expect_refused(info(), config_path(),
                 "num_attention_heads (4) is not a multiple of num_key_value_heads (3)");
  write_config_with("num_key_value_heads", "8");
  expect_config_error("is not a multiple of num_key_value_heads (8)");
  write_config_with("head_dim", "7");
  expect_config_error("head_dim: expected an even head_dim");
  json j = small_config().to_json();
  j.erase("head_dim");
  j["hidden_size"] = 30;
  write_config(j);
  expect_config_error("hidden_size: 30 is not a multiple of num_attention_heads (4)");
  j["hidden_size"] = 4;  // head_dim 1
  write_config(j);
  expect_config_error("not an even head dimension");
  write_config_with("rope_scaling",
                    R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
                        "high_freq_factor": 4})");
  expect_config_error("rope_scaling: low_freq_factor (4) must be below high_freq_factor (4)");
  write_config_with("rope_scaling", R"({"rope_type": "linear", "factor": 0})");
  expect_config_error("rope_scaling.factor: expected a number in [1e-06, 1e+06]");
}

TEST_F(ModelFiles, WhatIsNotImplementedIsRefused) {
  write_config_with("hidden_act", "\"gelu\"");
  expect_refused(info(), config_path(), "hidden_act: \"gelu\" is not supported (silu, swish)");
  expect_refused(generate(), config_path(), "hidden_act: \"gelu\" is not supported");
  write_config_with("rope_scaling", R"({"rope_type": "yarn", "factor": 4})");
  expect_refused(info(), config_path(),
                 "rope_scaling.rope_type: \"yarn\" is not supported (default, linear, llama3)");
  write_config_with("rope_scaling", R"({"type": "dynamic", "factor": 2})");
  expect_config_error("rope_scaling.type: \"dynamic\" is not supported");
  write_config_with("rope_scaling", R"({"factor": 2})");
  expect_config_error("rope_scaling.type: missing");
  write_config_with("model_type", "\"gpt2\"");
  expect_config_error("model_type: \"gpt2\" is not supported");
  write_config_with("architectures", "[\"GPT2LMHeadModel\"]");
  expect_config_error("architectures[0]: \"GPT2LMHeadModel\" is not supported");
  write_config_with("mlp_bias", "true");
  expect_config_error("mlp_bias: expected false (MLP biases are not implemented)");
  write_config_with("use_sliding_window", "true");
  expect_config_error("use_sliding_window: expected false");
  // What is implemented still loads.
  write_config_with("rope_scaling", R"({"rope_type": "linear", "factor": 2})");
  EXPECT_EQ(load_model_config(dir_model_).rope_scaling.type, "linear");
  write_config_with("rope_scaling", R"({"type": "default"})");
  EXPECT_EQ(load_model_config(dir_model_).rope_scaling.type, "");
  write_config_with("hidden_act", "\"silu\"");
  EXPECT_NO_THROW(load_model_config(dir_model_));

  write_config(small_config().to_json());
  json t = tokenizer_json();
  t["truncation"] = {{"max_length", 4}};
  write_file(tok_path(), t.dump());
  expect_refused(tokenize(tok_path()), tok_path(), "truncation: expected null");
  t = tokenizer_json();
  t["padding"] = {{"strategy", {{"Fixed", 16}}}};
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(), "padding.strategy: expected \"BatchLongest\"");
  t = tokenizer_json();
  t["model"]["dropout"] = 0.1;
  write_file(tok_path(), t.dump());
  expect_tokenizer_error(tok_path(), "model.dropout: expected null (dropout is not supported)");
}

TEST_F(ModelFiles, TokenizerIdsBeyondTheModelsVocabulary) {
  json t = tokenizer_json();
  t["added_tokens"].push_back({{"id", 300}, {"content", "<extra>"}, {"special", true}});
  write_file(tok_path(), t.dump());
  const std::string problem = "token id 300 (\"<extra>\") >= vocab_size 258 of " + config_path();
  expect_refused(generate(), tok_path(), problem);
  expect_refused(tokenize(tok_path()), tok_path(), problem);

  t = tokenizer_json();
  t["model"]["vocab"]["zz"] = 1000;
  write_file(tok_path(), t.dump());
  expect_refused(generate(), tok_path(), "token id 1000 (\"zz\") >= vocab_size 258");

  // Alone (no config.json beside it), the tokenizer's own ranges and duplicates are checked.
  const std::string alone = tmp_.path("alone.json");
  t = tokenizer_json();
  t["model"]["vocab"]["zz"] = 1000;
  write_file(alone, t.dump());
  EXPECT_EQ(load_tokenizer(alone)->vocab_size(), 1001);
  t["model"]["vocab"]["zz"] = -1;
  write_file(alone, t.dump());
  expect_refused(tokenize(alone), alone, "model.vocab.zz: expected an integer in [0, 1048575]");
  t["model"]["vocab"]["zz"] = 5;
  write_file(alone, t.dump());
  expect_tokenizer_error(alone, "model.vocab: id 5 is given to both");
  t = tokenizer_json();
  t["added_tokens"][1]["id"] = 256;
  write_file(alone, t.dump());
  expect_tokenizer_error(alone, "added_tokens[1].id: id 256 is given to both \"<s>\" and \"</s>\"");
  t = tokenizer_json();
  t["post_processor"]["special_tokens"]["<s>"]["ids"] = {10000000000};
  write_file(alone, t.dump());
  expect_tokenizer_error(alone, "ids[0]: expected an integer in [0, 1048575]");
  t["post_processor"]["special_tokens"]["<s>"]["ids"] = {1000};
  write_file(alone, t.dump());
  expect_tokenizer_error(alone, "post_processor: adds token id 1000, outside the vocabulary");
  // Inside the range but in a gap of the vocabulary (ids up to 1000, none at 500): refused too
  // (fuzz_tokenizer_json found such an id becoming BOS without a string).
  t = tokenizer_json();
  t["model"]["vocab"]["zz"] = 1000;
  t["post_processor"]["special_tokens"]["<s>"]["ids"] = {500};
  write_file(alone, t.dump());
  expect_tokenizer_error(alone,
                         "adds token id 500, which no token of the vocabulary or added_tokens holds");
}

TEST_F(ModelFiles, RegexesCannotHangOrLoop) {
  const std::string path = tmp_.path("split.json");
  json t = tokenizer_json();
  // An empty match at every position: the search must still advance.
  t["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "x*"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  write_file(path, t.dump());
  EXPECT_EQ(load_tokenizer(path)->encode("abc"), (std::vector<int32_t>{256, 97, 98, 99}));
  // Catastrophic backtracking is stopped by the match limit, with one line naming the pattern.
  t["pre_tokenizer"]["pattern"]["Regex"] = "^(a|a)+$";
  write_file(path, t.dump());
  auto r = tokenize(path, std::string(60, 'a') + "!");
  expect_refused(r, path + ": pre_tokenizer.pattern", "regex cannot be matched");
}

// Writes a safetensors file: u64 little-endian header length, the header, `data_bytes` zeros.
void write_st(const std::string& path, const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_file(path, out + header + std::string(data_bytes, '\0'));
}

TEST_F(ModelFiles, SafetensorsHeadersAreChecked) {
  const auto load = [&] { Model::load(dir_model_); };
  const std::string e = R"("model.embed_tokens.weight")";
  write_st(st_path(), "{" + e + R"(:{"dtype":"F32","shape":[258,32],"data_offsets":[0,33024]}})",
           64);
  expect_refused(generate(), st_path(), "runs past the data buffer (64 bytes)");
  write_st(st_path(),
           "{" + e + R"(:{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)" +
               R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
           24);
  expect_refused(generate(), st_path(), "overlap");
  write_st(st_path(),
           "{" + e + R"(:{"dtype":"F32","shape":[1099511627776,1099511627776],)" +
               R"("data_offsets":[0,16]}})",
           16);
  expect_input_error(load, st_path(), "too many elements");
  write_st(st_path(),
           "{" + e + R"(:{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],)" +
               R"("data_offsets":[0,4]}})",
           4);
  expect_input_error(load, st_path(), "shape has 17 dimensions, more than 16");
  write_st(st_path(),
           "{" + e + R"(:{"dtype":"F32","dtype":"F16","shape":[2],)" + R"("data_offsets":[0,8]}})",
           8);
  expect_input_error(load, st_path(), "duplicate key \"dtype\"");
  write_st(st_path(), std::string(100000, '[') + std::string(100000, ']'), 0);
  expect_input_error(load, st_path(), "nesting deeper than 64 levels");
  write_st(st_path(), "{" + e + R"(:{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8);
  expect_input_error(load, st_path(), "shape[0]: expected an integer, got a number 2.5");
  write_st(st_path(), "{" + e + R"(:{"dtype":"F32","shape":[2],"data_offsets":[0,1e999]}})", 8);
  expect_input_error(load, st_path(), "number overflow");
  // A well-formed file whose tensor disagrees with config.json.
  write_st(st_path(), "{" + e + R"(:{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  expect_refused(generate(), st_path(), "has shape [2], config.json implies [258,32]");
}

TEST_F(ModelFiles, ShardedIndexIsChecked) {
  const auto load = [&] { Model::load(dir_model_); };
  fs::rename(st_path(), dir_model_ + "/model-00001-of-00001.safetensors");
  const std::string index = dir_model_ + "/model.safetensors.index.json";
  write_file(index, "{\"weight_map\": " + std::string(100000, '[') + "}");
  expect_refused(generate(), index, "nesting deeper than 64 levels");
  write_file(index, R"({"weight_map": {"model.norm.weight": 7}})");
  expect_input_error(load, index,
                     "weight_map.model.norm.weight: expected a string, got an integer 7");
  write_file(index, R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})");
  expect_input_error(load, index, "duplicate key \"a\"");
  write_file(index, R"({"weight_map": []})");
  expect_input_error(load, index, "weight_map: expected an object");
}

TEST_F(ModelFiles, Llama2cHeadersAreBoundedBeforeReading) {
  const std::string ck = tmp_.path("ck.bin");
  const std::string out = tmp_.path("imported");
  const auto import = [&] {
    return test::run_kvbench("import-llama2c --checkpoint " + test::q(ck) +
                             " --tokenizer x --out " + test::q(out));
  };
  const auto read = [&] { read_llama2c_checkpoint(ck); };
  const auto header = [&](std::initializer_list<int32_t> h, size_t extra) {
    std::string bytes;
    for (int32_t v : h) bytes.append(reinterpret_cast<const char*>(&v), 4);
    write_file(ck, bytes + std::string(extra, '\0'));
  };
  header({1 << 20, 172, 5, 8, 4, 512, 512}, 64);
  expect_refused(import(), ck, "implausible llama2.c header (dim 1048576");
  header({64, 172, 5, 8, 4, INT32_MIN, 512}, 64);
  expect_input_error(read, ck, "vocab 2147483648");
  header({64, 172, 5, 8, 4, 512, 1 << 30}, 64);
  expect_input_error(read, ck, "seq_len 1073741824");
  header({64, 172, 2000, 8, 4, 512, 512}, 64);
  expect_input_error(read, ck, "layers 2000");
  header({64, 172, 5, 8, 4, 2000000, 512}, 64);
  expect_input_error(read, ck, "vocab 2000000");
  header({64, 172, 5, 6, 4, 512, 512}, 64);
  expect_input_error(read, ck, "heads do not divide dim");
  header({4096, 172, 5, 2, 1, 512, 512}, 64);  // head size 2048
  expect_input_error(read, ck, "heads do not divide dim");
  header({64, 172, 5, 8, 4, 512, 512}, 64);
  expect_refused(import(), ck, "does not match its header");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ModelFiles, ControlCharactersAreEscapedOnOneLine) {
  write_config_with("architectures", "[\"Llama\\nFor\\r\\u0001Causal\"]");
  auto r = info();
  expect_refused(r, config_path(), "\"Llama\\nFor\\r\\x01Causal\" is not supported");
  write_config(small_config().to_json());
  json t = tokenizer_json();
  t["normalizer"] = {{"type", "Lower\ncase\t"}};
  write_file(tok_path(), t.dump());
  r = generate();
  expect_refused(r, tok_path(), "normalizer.type: \"Lower\\ncase\\t\" is not supported");
  // A key with a newline, named in the path.
  t = tokenizer_json();
  t["model"]["vocab"]["a\nb"] = "x";
  write_file(tok_path(), t.dump());
  expect_refused(generate(), tok_path(), "model.vocab.a\\nb: expected an integer");
}

TEST_F(ModelFiles, LongValuesAreCut) {
  const std::string long_value(5000, 'G');
  write_config_with("hidden_act", "\"" + long_value + "\"");
  auto r = info();
  expect_refused(r, config_path(), "hidden_act: \"" + std::string(200, 'G') + "...\"");
  EXPECT_EQ(r.err.find(std::string(201, 'G')), std::string::npos);
  EXPECT_LT(r.err.size(), 1100u);
  write_config(small_config().to_json());
  json t = tokenizer_json();
  t["model"]["type"] = long_value;
  write_file(tok_path(), t.dump());
  r = tokenize(tok_path());
  expect_refused(r, tok_path(),
                 "model.type: \"" + std::string(200, 'G') + "...\" is not supported");
  EXPECT_LT(r.err.size(), 1100u);
}

}  // namespace
}  // namespace kvb
