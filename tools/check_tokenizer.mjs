// check_tokenizer.mjs DIR -- loads DIR/tokenizer.json (+ tokenizer_config.json)
// with @huggingface/tokenizers (an independent implementation of HF tokenizers)
// and checks that pagellm's generated tokenizer works there: sample texts
// encode to ids inside config.json's vocab_size, start with the BOS token,
// and decode back to the same text; special tokens encode as single ids.
// Exits non-zero on the first failure. Run from the repository root:
//   node tools/check_tokenizer.mjs models/default
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node tools/check_tokenizer.mjs MODEL_DIR");
  process.exit(2);
}
const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const nodeModules = process.env.PL_NODE_MODULES || path.join(root, "tests/node/node_modules");
const require = createRequire(path.join(nodeModules, "noop.js"));
const { Tokenizer } = require("@huggingface/tokenizers");

const tokJson = JSON.parse(readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
const tokCfg = JSON.parse(readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
const config = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8"));
const tok = new Tokenizer(tokJson, tokCfg);

let failures = 0;
function check(cond, what) {
  if (!cond) {
    console.error("FAIL: " + what);
    failures++;
  }
}

const bos = tokJson.added_tokens.find((t) => t.content === "<|begin_of_text|>").id;
const texts = [
  "The best way to learn about AI is",
  "San Francisco is a city known for",
  "What is the capital of France?",
  "Write a short story about a robot who discovers music.",
  "Numbers like 12345 and 3.14, tabs\tand\nnew lines;   spaces!",
  "Unicode: café, naïve, 東京, emoji 🎵",
];
let nTok = 0, nBytes = 0;
for (const text of texts) {
  const enc = tok.encode(text);
  const ids = enc.ids;
  check(ids[0] === bos, `'${text}': first id ${ids[0]} is not BOS ${bos}`);
  check(ids.every((i) => Number.isInteger(i) && i >= 0 && i < config.vocab_size),
        `'${text}': an id is outside vocab_size ${config.vocab_size}: ${ids}`);
  const plain = tok.encode(text, { add_special_tokens: false }).ids;
  check(plain.length === ids.length - 1, `'${text}': add_special_tokens=false still adds tokens`);
  const back = tok.decode(plain);
  check(back === text, `'${text}': decodes to '${back}'`);
  nTok += plain.length;
  nBytes += Buffer.byteLength(text);
  console.log(`${JSON.stringify(text)} -> ${JSON.stringify(ids)}`);
}
// merges must compress English: well under one token per byte
check(nTok < 0.6 * nBytes, `poor compression: ${nTok} tokens for ${nBytes} bytes`);

const chat = "<|im_start|>user\nhi<|im_end|>\n";
const chatIds = tok.encode(chat, { add_special_tokens: false }).ids;
for (const s of ["<|im_start|>", "<|im_end|>"]) {
  const id = tokJson.added_tokens.find((t) => t.content === s).id;
  check(chatIds.includes(id), `${s} (${id}) is not a single token in ${chatIds}`);
}
check(tok.decode(chatIds) === chat, "chat text does not round-trip");
check(tok.decode(chatIds, { skip_special_tokens: true }) === "user\nhi\n",
      "skip_special_tokens keeps specials");

const maxId = Math.max(...Object.values(tokJson.model.vocab), ...tokJson.added_tokens.map((t) => t.id));
check(maxId + 1 === config.vocab_size, `vocab_size ${config.vocab_size} != max id + 1 (${maxId + 1})`);

if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log(`tokenizer ok: ${nTok} tokens for ${nBytes} bytes, vocab ${config.vocab_size}`);
