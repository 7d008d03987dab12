// Plain-text corpora: single files, WikiText-2 raw, folders of .txt files; sentence splitting.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvb {

// The largest text or JSONL file a dataset may read (and a text_dir's .txt files together): 2^30
// bytes, refused before reading; a text_dir holds at most kMaxTextDirFiles .txt files.
inline constexpr int64_t kMaxDatasetFileBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxTextDirFiles = 100000;

// Refuses ("<path>: N bytes, more than the 1073741824 a dataset file may have") a file larger
// than kMaxDatasetFileBytes; returns its size.
int64_t check_dataset_file_size(const std::string& path);

// Reads a UTF-8 text file with line ends normalised to "\n" (CRLF and lone CR).
// kvb::InputError "<path>: cannot open file" / "<path>: empty" on failure.
std::string load_text_file(const std::string& path);

// WikiText-2 raw (wiki.test.raw): CRLF normalised; the text is kept as the file has it
// (" @-@ " etc. stay, as the standard perplexity evaluations feed it).
std::string load_wikitext2(const std::string& path);

// Every *.txt file of `dir` in byte order of the file names, each trimmed, joined by "\n\n".
// kvb::InputError "<dir>: ..." when not a directory, no .txt file is in it, or beyond the limits.
std::string load_text_dir(const std::string& dir);

// Normalises line ends to "\n".
std::string normalize_newlines(const std::string& s);

// Sentences of `text`: each ends after '.', '!' or '?' (plus closing quotes/brackets) followed by
// whitespace, or at a blank line. Returned trimmed, whitespace runs inside folded to one space;
// empty pieces dropped.
std::vector<std::string> split_sentences(const std::string& text);

}  // namespace kvb
