// Conversion of a llama2.c tokenizer (tokenizer.bin / tok512.bin) into a Hugging Face
// tokenizer.json of the SentencePiece-BPE kind (what transformers' LlamaConverter produces), so
// that the rest of kvbench only ever loads tokenizer.json files.
//
// tok*.bin layout (little-endian): int32 max_token_length, then for each of vocab_size tokens:
// float32 score, int32 length, `length` bytes. Ids 0, 1, 2 are <unk>, <s>, </s>; ids 3..258 are
// the byte tokens "<0x00>".."<0xFF>"; llama2.c's exporter wrote SentencePiece's "▁" as ' '.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kvb {

// tokenizer.json for the llama2.c tokenizer at `tok_bin_path` holding `vocab_size` tokens.
// Merges are every pair of vocabulary pieces whose concatenation is a piece, ordered by the
// merged piece's score (highest first; ties by the merged piece's id, then by the pair's ids),
// which makes HF's BPE reproduce run.c's encode (repeatedly merge the best-scoring adjacent
// pair). byte_fallback replaces run.c's "+3" byte lookup; the post-processor adds BOS.
// kvb::InputError "<path>: ..." when the file is missing, truncated or not of this layout.
nlohmann::json llama2c_tokenizer_to_hf(const std::string& tok_bin_path, int vocab_size);

// tokenizer_config.json to go with it (BOS added, EOS not; LlamaTokenizer).
nlohmann::json llama2c_tokenizer_config();

// Writes `tokenizer_json` as out_dir/tokenizer.json and llama2c_tokenizer_config() as
// out_dir/tokenizer_config.json (the directory must exist).
void write_llama2c_tokenizer_files(const nlohmann::json& tokenizer_json,
                                   const std::string& out_dir);

}  // namespace kvb
