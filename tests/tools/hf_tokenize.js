#!/usr/bin/env node
// Reference tokenization with Hugging Face's own `tokenizers` library (npm package), for the
// parity test tests/test_tokenizer_parity.cpp.
//
// Usage: node hf_tokenize.js TOKENIZER_JSON INPUT...
//   INPUT is FILE (the whole file is one text) or --lines FILE (every line of FILE, without its
//   "\n" or "\r\n", is one text; a final line terminator does not start an extra empty line).
// Prints one JSON object:
//   {"tokenizer": PATH, "inputs": [{"file": FILE, "line": N or null, "bytes": UTF-8 length,
//     "ids": encode(text, add_special_tokens=true),
//     "decoded": decode(ids, skip_special_tokens=false),
//     "decoded_skip": decode(ids, skip_special_tokens=true)}, ...]}
// The package is looked up in $KVB_NPM_DIR/node_modules, then by the usual require() rules
// (NODE_PATH).
'use strict';
const fs = require('fs');
const path = require('path');

function loadTokenizers() {
  const dir = process.env.KVB_NPM_DIR;
  if (dir) {
    const p = path.join(dir, 'node_modules', 'tokenizers');
    if (fs.existsSync(p)) return require(p);
  }
  return require('tokenizers');
}

// Splits a file's bytes into lines without their terminators (like the C++ side does).
function fileLines(buf) {
  const lines = [];
  let start = 0;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === 0x0a) {
      const end = i > start && buf[i - 1] === 0x0d ? i - 1 : i;
      lines.push(buf.subarray(start, end));
      start = i + 1;
    }
  }
  if (start < buf.length) lines.push(buf.subarray(start));
  return lines;
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length < 1) {
    process.stderr.write('usage: node hf_tokenize.js TOKENIZER_JSON [--lines] FILE...\n');
    process.exit(2);
  }
  const { Tokenizer } = loadTokenizers();
  const tokenizer = Tokenizer.fromFile(args[0]);
  const texts = [];  // [file, line or null, Buffer]
  for (let i = 1; i < args.length; i++) {
    if (args[i] === '--lines') {
      const file = args[++i];
      fileLines(fs.readFileSync(file)).forEach((b, n) => texts.push([file, n, b]));
    } else {
      texts.push([args[i], null, fs.readFileSync(args[i])]);
    }
  }
  const out = [];
  for (const [file, line, buf] of texts) {
    const text = buf.toString('utf8');
    const enc = await tokenizer.encode(text, null, { addSpecialTokens: true });
    const ids = Array.from(enc.getIds());
    out.push({
      file,
      line,
      bytes: buf.length,
      ids,
      decoded: await tokenizer.decode(ids, false),
      decoded_skip: await tokenizer.decode(ids, true),
    });
  }
  process.stdout.write(JSON.stringify({ tokenizer: args[0], inputs: out }));
}

main().catch((e) => {
  process.stderr.write(`hf_tokenize.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
