#!/usr/bin/env node
// tok_bench_ref.mjs TEXT_FILE MODEL_DIR -- the baseline for bench_tokenizer: encodes the
// same text in the same 4 KB requests with @huggingface/tokenizers (best of 3) and
// prints MB/s. Finds the package through PL_NODE_MODULES or tests/node/node_modules.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [textFile, dir] = process.argv.slice(2);
const nm = process.env.PL_NODE_MODULES || path.join(path.dirname(new URL(import.meta.url).pathname), "..", "tests", "node", "node_modules");
const { Tokenizer } = await import(pathToFileURL(path.resolve(nm, "@huggingface/tokenizers/dist/tokenizers.mjs")).href);
const tok = new Tokenizer(
  JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
);
const buf = fs.readFileSync(textFile);
// The same cuts as the C bench: every 4096 bytes, moved forward to a character start.
const chunks = [];
for (let pos = 0; pos < buf.length; ) {
  let end = Math.min(pos + 4096, buf.length);
  while (end < buf.length && (buf[end] & 0xc0) === 0x80) end++;
  chunks.push(buf.subarray(pos, end).toString("utf8"));
  pos = end;
}
let best = Infinity;
for (let rep = 0; rep < 3; rep++) {
  const t0 = process.hrtime.bigint();
  for (const c of chunks) tok.encode(c, { add_special_tokens: false });
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  best = Math.min(best, dt);
}
console.log((buf.length / 1e6 / best).toFixed(3));
