// server_tools.mjs -- tool calling through real clients: the official `openai` client
// (tools, tool_choice named / required / auto, streamed and not, its own stream accumulator)
// and LangChain JS (ChatOpenAI.bindTools, streamed tool-call chunks, a tool-result round
// trip), against `pagellm serve --enable-auto-tool-choice` with a Hermes-style template
// (tests/fixtures/chat_template/templates/hermes_tools.jinja).
// The model has random weights, so it never calls a tool on its own: named and required
// tool choices are grammar-constrained (the arguments must parse and validate whatever the
// weights), and auto mode's parser is driven by forcing the exact call text with
// guided_choice. References: the streamed deltas against the full answer, the plain HTTP
// request against LangChain, @huggingface/jinja rendering the template for the round trip.
// Env (besides server_util.mjs's): PL_TOOLS_BASE_URL (the tools server), PL_TOOLS_TEMPLATE.
import OpenAI from 'openai';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import { Template } from '@huggingface/jinja';
import { readFileSync } from 'node:fs';
import { test, run, assert, eq, MODEL, API_KEY } from './server_util.mjs';
import { weather, clock, checkArgs } from './tool_fixtures.mjs';

const TOOLS_URL = process.env.PL_TOOLS_BASE_URL;
const TEMPLATE = readFileSync(process.env.PL_TOOLS_TEMPLATE, 'utf8');
if (!TOOLS_URL) { console.error('server_tools needs PL_TOOLS_BASE_URL'); process.exit(2); }
const client = new OpenAI({ baseURL: `${TOOLS_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });

const tools = [weather, clock];
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const base = { model: MODEL, messages, tools, temperature: 0, max_tokens: 80 };

// The stream folded by hand: content, calls [{id, name, arguments}], finish_reason. A call's
// first delta must carry its index, id, type and name; later ones only arguments.
async function fold(stream) {
  let content = '', finish = null;
  const calls = [];
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    if (ch.delta.content) content += ch.delta.content;
    for (const d of ch.delta.tool_calls ?? []) {
      if (d.index === calls.length) {
        assert(d.id && d.type === 'function' && d.function.name, `first delta ${JSON.stringify(d)}`);
        calls.push({ id: d.id, name: d.function.name, arguments: '' });
      } else {
        eq(d.index, calls.length - 1, 'delta index');
        assert(!d.id && !d.function.name, `later delta ${JSON.stringify(d)}`);
      }
      calls[d.index].arguments += d.function.arguments ?? '';
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  return { content, calls, finish };
}

const shape = (calls) => calls.map((c) => ({ name: c.function?.name ?? c.name, arguments: c.function?.arguments ?? c.arguments }));

test('named tool_choice: one call to that function whose arguments validate; finish stop', async () => {
  const r = await client.chat.completions.create({ ...base, tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  const m = r.choices[0].message;
  eq(m.content, null, 'content');
  eq(m.tool_calls.length, 1);
  const c = m.tool_calls[0];
  assert(c.id.startsWith('chatcmpl-tool-') && c.type === 'function', JSON.stringify(c));
  eq(c.function.name, 'get_weather');
  checkArgs('get_weather', c.function.arguments);
  eq(r.choices[0].finish_reason, 'stop');
});

test('required: calls validate, streamed deltas add up to the full answer, finish tool_calls', async () => {
  for (const seed of [1, 2, 3]) {
    const req = { ...base, tool_choice: 'required', temperature: 1, seed };
    const full = await client.chat.completions.create(req);
    const m = full.choices[0].message;
    assert(m.tool_calls?.length >= 1, JSON.stringify(m));
    for (const c of m.tool_calls) checkArgs(c.function.name, c.function.arguments);
    eq(full.choices[0].finish_reason, 'tool_calls');
    const s = await fold(await client.chat.completions.create({ ...req, stream: true }));
    eq(shape(s.calls), shape(m.tool_calls), `seed ${seed}: streamed calls`);
    eq(s.content, m.content ?? '');
    eq(s.finish, 'tool_calls');
    // the client's own accumulator agrees
    const acc = await client.chat.completions.stream(req).finalChatCompletion();
    eq(shape(acc.choices[0].message.tool_calls), shape(m.tool_calls), 'openai stream helper');
  }
});

test('parallel_tool_calls false: exactly one call', async () => {
  for (const seed of [4, 5]) {
    const r = await client.chat.completions.create({ ...base, tool_choice: 'required', parallel_tool_calls: false, temperature: 1, seed });
    eq(r.choices[0].message.tool_calls.length, 1);
  }
});

test('auto: a Hermes <tool_call> in the output becomes tool_calls (full and streamed)', async () => {
  const text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>';
  const req = { ...base, max_tokens: 400, guided_choice: [text] }; // no tool_choice: auto
  const r = await client.chat.completions.create(req);
  const m = r.choices[0].message;
  eq(m.content, 'Let me look.\n');
  eq(shape(m.tool_calls), [{ name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' }]);
  eq(r.choices[0].finish_reason, 'tool_calls');
  const s = await fold(await client.chat.completions.create({ ...req, stream: true }));
  eq(s.content, 'Let me look.\n');
  eq(shape(s.calls), shape(m.tool_calls));
  eq(s.finish, 'tool_calls');
  // without a call the answer is plain content
  const plain = await client.chat.completions.create({ ...base, guided_choice: ['It is sunny.'] });
  eq(plain.choices[0].message.content, 'It is sunny.');
  assert(!plain.choices[0].message.tool_calls, 'no tool_calls');
  eq(plain.choices[0].finish_reason, 'stop');
});

test('tool_choice none: no parsing, the forced call text stays content', async () => {
  const text = '<tool_call>\n{"name": "get_time", "arguments": {"tz": 1}}\n</tool_call>';
  const r = await client.chat.completions.create({ ...base, tool_choice: 'none', max_tokens: 400, guided_choice: [text] });
  eq(r.choices[0].message.content, text);
  assert(!r.choices[0].message.tool_calls);
});

test('bad tool requests are 400s naming the field', async () => {
  const bad = async (req, param) => client.chat.completions.create(req).then(
    () => { throw new Error(`accepted ${JSON.stringify(req)}`); },
    (e) => { assert(e instanceof OpenAI.BadRequestError, String(e)); eq(e.error?.param ?? e.param, param); });
  await bad({ ...base, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice');
  await bad({ ...base, tools: undefined, tool_choice: 'required' }, 'tool_choice');
  await bad({ ...base, tool_choice: 'required', response_format: { type: 'json_object' } }, 'tool_choice');
  await bad({ ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { x: { type: 'array', uniqueItems: true } } } } }], tool_choice: 'required' }, 'tools');
});

// ---- LangChain ----------------------------------------------------------------------------

const chat = new ChatOpenAI({ model: MODEL, apiKey: API_KEY, configuration: { baseURL: `${TOOLS_URL}/v1` }, temperature: 0, maxTokens: 60, maxRetries: 0 });

async function direct(body) {
  const r = await fetch(`${TOOLS_URL}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${API_KEY}` }, body: JSON.stringify(body),
  });
  const j = await r.json();
  eq(r.status, 200, JSON.stringify(j));
  return j;
}

test('LangChain bindTools (forced tool) returns tool_calls; stream chunks add up to invoke', async () => {
  const model = chat.bindTools(tools, { tool_choice: 'get_weather' });
  const ai = await model.invoke([new HumanMessage('What is the weather in Paris?')]);
  eq(ai.tool_calls.length, 1);
  eq(ai.tool_calls[0].name, 'get_weather');
  checkArgs('get_weather', JSON.stringify(ai.tool_calls[0].args));
  assert(ai.tool_calls[0].id.startsWith('chatcmpl-tool-'));
  let acc = null;
  for await (const chunk of await model.stream([new HumanMessage('What is the weather in Paris?')])) acc = acc ? acc.concat(chunk) : chunk;
  eq(acc.tool_calls.map((c) => [c.name, c.args]), ai.tool_calls.map((c) => [c.name, c.args]));
  const any = await chat.bindTools(tools, { tool_choice: 'any' }).invoke([new HumanMessage('Weather or time?')]);
  assert(any.tool_calls.length >= 1 && any.tool_calls.every((c) => ['get_weather', 'get_time'].includes(c.name)));
});

test('LangChain tool-result round trip equals the plain request; the template sees calls and results', async () => {
  const model = chat.bindTools(tools, { tool_choice: 'get_weather' });
  const human = new HumanMessage('What is the weather in Paris?');
  const ai = await model.invoke([human]);
  const call = ai.tool_calls[0];
  const result = new ToolMessage({ content: `22 degrees in ${call.args.city}`, tool_call_id: call.id });
  const answer = await chat.bindTools(tools).invoke([human, ai, result]); // auto: the model answers
  // the same conversation as plain OpenAI JSON
  const convo = [
    { role: 'user', content: 'What is the weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: [{ id: call.id, type: 'function', function: { name: 'get_weather', arguments: JSON.stringify(call.args) } }] },
    { role: 'tool', tool_call_id: call.id, content: result.content },
  ];
  const want = await direct({ model: MODEL, messages: convo, tools, temperature: 0, max_tokens: 60 });
  eq(answer.content, want.choices[0].message.content ?? '');
  eq(answer.usage_metadata.input_tokens, want.usage.prompt_tokens, 'prompt tokens');
  // the reference rendering: vLLM's preprocessing (arguments parsed, null content ""), the
  // tools as vLLM dumps them, through @huggingface/jinja
  const rendered = new Template(TEMPLATE).render({
    messages: [convo[0], { ...convo[1], content: '', tool_calls: [{ ...convo[1].tool_calls[0], function: { name: 'get_weather', arguments: call.args } }] }, convo[2]],
    tools: tools.map((t) => ({ type: 'function', function: { name: t.function.name, description: t.function.description, parameters: t.function.parameters } })),
    add_generation_prompt: true, bos_token: '', eos_token: '',
  });
  assert(rendered.includes('<tool_response>\n22 degrees in') && rendered.includes('"name": "get_weather", "arguments": {"city": '), rendered);
  const tok = await fetch(`${TOOLS_URL}/tokenize`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ model: MODEL, prompt: rendered, add_special_tokens: false }),
  }).then((r) => r.json());
  eq(tok.count, want.usage.prompt_tokens, 'the server rendered the reference prompt');
});

run();
