// server_responses_tools.mjs -- /v1/responses with function tools and text.format through the
// official `openai` client (responses.create full and streamed, responses.stream's accumulator,
// responses.parse with zodTextFormat and zodResponsesFunction), against the tools server of
// server_tools.mjs (--enable-auto-tool-choice, a Hermes-style template) and a second one
// started with --tool-call-parser llama3_json.
// The model has random weights, so it never calls a tool on its own: named and required tool
// choices are grammar-constrained (the arguments parse and validate whatever the weights),
// and auto mode's parser is driven by a text.format schema that forces the exact llama3_json
// call text. References: the chat route itself (the same conversation and tools sent to
// /v1/chat/completions must give the same prompt tokens, the same greedy answer and the same
// refusal text), the streamed events against the full answer.
// Env (besides server_util.mjs's): PL_TOOLS_BASE_URL (the tools server),
// PL_LLAMA3_TOOLS_BASE_URL (the llama3_json server).
import OpenAI from 'openai';
import { zodTextFormat, zodResponsesFunction } from 'openai/helpers/zod';
import { z } from 'zod';
import { test, run, assert, eq, MODEL, API_KEY } from './server_util.mjs';
import { weather, clock, checkArgs } from './tool_fixtures.mjs';

const TOOLS_URL = process.env.PL_TOOLS_BASE_URL;
const LLAMA3_URL = process.env.PL_LLAMA3_TOOLS_BASE_URL;
if (!TOOLS_URL || !LLAMA3_URL) {
  console.error('server_responses_tools needs PL_TOOLS_BASE_URL and PL_LLAMA3_TOOLS_BASE_URL');
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${TOOLS_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });
const llama3 = new OpenAI({ baseURL: `${LLAMA3_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });

// The tools as the Responses API writes them (flat) and as chat completions does.
const tools = [weather, clock].map(({ type, function: fn }) => ({ type, ...fn, strict: true }));
const chatTools = tools.map(({ type, ...fn }) => ({ type, function: fn }));
const INPUT = 'What is the weather in Paris?';
const base = { model: MODEL, input: INPUT, tools, temperature: 0, max_output_tokens: 80 };

// A function_call output item's shape.
function checkCallItem(item, status = 'completed') {
  eq(item.type, 'function_call');
  assert(item.id.startsWith('fc_') && item.call_id.startsWith('call_'), JSON.stringify(item));
  eq(item.status, status);
  assert(typeof item.arguments === 'string', 'arguments is JSON text');
}

const calls = (r) => r.output.filter((o) => o.type === 'function_call');
const shape = (items) => items.map((o) => (o.type === 'function_call' ? { name: o.name, arguments: o.arguments, status: o.status }
  : { type: o.type, text: o.content?.[0]?.text }));

// The stream folded by hand: items by output_index (each delta must belong to an opened item,
// the done events must repeat what the deltas added up to), the event names, the final
// response.
async function fold(stream) {
  const items = [], types = [];
  let seq = 0, final = null;
  for await (const ev of stream) {
    eq(ev.sequence_number, seq++, 'sequence_number');
    types.push(ev.type);
    if (ev.type === 'response.output_item.added') {
      eq(ev.output_index, items.length, 'items open in order');
      eq(ev.item.status, 'in_progress');
      items.push({ ...ev.item, acc: '' });
    } else if (ev.type === 'response.function_call_arguments.delta' || ev.type === 'response.output_text.delta') {
      const it = items[ev.output_index];
      assert(it && it.id === ev.item_id, `delta for an unopened item: ${JSON.stringify(ev)}`);
      it.acc += ev.delta;
    } else if (ev.type === 'response.function_call_arguments.done') {
      const it = items[ev.output_index];
      eq(ev.arguments, it.acc, 'arguments.done repeats the deltas');
      eq(ev.name, it.name);
      eq(ev.item_id, it.id);
    } else if (ev.type === 'response.output_item.done') {
      const it = items[ev.output_index];
      eq(ev.item.id, it.id);
      if (ev.item.type === 'function_call') {
        eq([ev.item.call_id, ev.item.name, ev.item.arguments], [it.call_id, it.name, it.acc], 'item.done');
      } else {
        eq(ev.item.content[0].text, it.acc, 'message item.done');
      }
    } else if (ev.type === 'response.completed' || ev.type === 'response.incomplete') {
      final = ev.response;
    }
  }
  return { items, types, final };
}

// ---- forced calls ----------------------------------------------------------------------------

test('named tool_choice: one function_call item whose arguments validate; no message item', async () => {
  const r = await client.responses.create({ ...base, tool_choice: { type: 'function', name: 'get_weather' } });
  eq(r.status, 'completed');
  eq(r.output.length, 1, JSON.stringify(r.output));
  checkCallItem(r.output[0]);
  eq(r.output[0].name, 'get_weather');
  checkArgs('get_weather', r.output[0].arguments);
  eq(r.output_text, '');
  eq(r.tool_choice, { type: 'function', name: 'get_weather' });
  eq(r.tools, tools, 'the response reports the tools');
  eq(r.parallel_tool_calls, true);
});

test('required: calls validate; streamed events add up to the full answer; the stream helper agrees', async () => {
  for (const seed of [1, 2, 3]) {
    const req = { ...base, tool_choice: 'required', temperature: 1, seed };
    const full = await client.responses.create(req);
    assert(calls(full).length >= 1 && calls(full).length === full.output.length, JSON.stringify(full.output));
    for (const c of calls(full)) { checkCallItem(c); checkArgs(c.name, c.arguments); }
    const s = await fold(await client.responses.create({ ...req, stream: true }));
    eq(shape(s.final.output), shape(full.output), `seed ${seed}: streamed output`);
    eq(s.items.map((i) => [i.name, i.acc]), full.output.map((o) => [o.name, o.arguments]), 'deltas');
    eq(s.types.slice(0, 3), ['response.created', 'response.in_progress', 'response.output_item.added']);
    eq(s.types.at(-1), 'response.completed');
    assert(s.types.includes('response.function_call_arguments.delta'), 'argument deltas');
    eq(s.final.usage, full.usage);
    const acc = await client.responses.stream(req).finalResponse();
    eq(shape(acc.output), shape(full.output), 'responses.stream finalResponse');
  }
});

test('parallel_tool_calls false: exactly one call', async () => {
  for (const seed of [4, 5]) {
    const r = await client.responses.create({ ...base, tool_choice: 'required', parallel_tool_calls: false, temperature: 1, seed });
    eq(calls(r).length, 1);
    eq(r.parallel_tool_calls, false);
  }
});

test('cut by max_output_tokens: the call is incomplete, the response too', async () => {
  const r = await client.responses.create({ ...base, tool_choice: { type: 'function', name: 'get_weather' }, max_output_tokens: 3 });
  eq(r.status, 'incomplete');
  eq(r.incomplete_details, { reason: 'max_output_tokens' });
  checkCallItem(r.output[0], 'incomplete');
});

test('responses.parse with zodResponsesFunction: parsed_arguments', async () => {
  const tool = zodResponsesFunction({
    name: 'get_weather', description: 'The current weather in a city',
    parameters: z.object({ city: z.string().max(12), unit: z.enum(['celsius', 'fahrenheit']) }),
  });
  const r = await client.responses.parse({ model: MODEL, input: INPUT, tools: [tool], tool_choice: { type: 'function', name: 'get_weather' }, temperature: 0, max_output_tokens: 80 });
  const c = r.output[0];
  eq(c.type, 'function_call');
  assert(c.parsed_arguments && typeof c.parsed_arguments.city === 'string', JSON.stringify(c));
  eq(c.parsed_arguments, JSON.parse(c.arguments));
});

// ---- auto: the server's parser -----------------------------------------------------------------

test('auto (--tool-call-parser llama3_json): a call in the output becomes a function_call item', async () => {
  // the exact call text, forced by a schema: {"name": "get_weather", "parameters": {...}}
  const forced = {
    type: 'json_schema', name: 'call', strict: true,
    schema: {
      type: 'object',
      properties: { name: { const: 'get_weather' }, parameters: { type: 'object', properties: { city: { const: 'Paris' }, unit: { const: 'celsius' } }, required: ['city', 'unit'] } },
      required: ['name', 'parameters'],
    },
  };
  const req = { ...base, text: { format: forced } }; // no tool_choice: auto
  const r = await llama3.responses.create(req);
  eq(r.output.length, 1, JSON.stringify(r.output));
  checkCallItem(r.output[0]);
  eq(r.output[0].name, 'get_weather');
  eq(JSON.parse(r.output[0].arguments), { city: 'Paris', unit: 'celsius' });
  eq(r.text.format, forced, 'text.format reported');
  const s = await fold(await llama3.responses.create({ ...req, stream: true }));
  eq(shape(s.final.output), shape(r.output), 'streamed');
  // text that is not a call stays a message
  const answer = { type: 'json_schema', name: 'answer', schema: { type: 'object', properties: { answer: { const: 'sunny' } }, required: ['answer'] } };
  const plain = await llama3.responses.create({ ...base, text: { format: answer } });
  eq(plain.output.length, 1);
  eq(plain.output[0].type, 'message');
  eq(JSON.parse(plain.output_text), { answer: 'sunny' });
  // tool_choice none: the forced call text is plain content
  const none = await llama3.responses.create({ ...req, tool_choice: 'none' });
  eq(shape(none.output).map((o) => o.type), ['message']);
  eq(JSON.parse(none.output_text).name, 'get_weather');
});

// ---- the conversation goes on ---------------------------------------------------------------

test('function_call + function_call_output input equals the chat conversation (prompt and answer)', async () => {
  const first = await client.responses.create({ ...base, tool_choice: { type: 'function', name: 'get_weather' } });
  const call = first.output[0];
  const result = `22 degrees in ${JSON.parse(call.arguments).city}`;
  // the client sends the output items back as they came, then the tool's result
  const input = [{ role: 'user', content: INPUT }, ...first.output, { type: 'function_call_output', call_id: call.call_id, output: result }];
  const next = await client.responses.create({ model: MODEL, input, tools, tool_choice: 'none', temperature: 0, max_output_tokens: 12 });
  const chat = await client.chat.completions.create({
    model: MODEL, tools: chatTools, tool_choice: 'none', temperature: 0, max_tokens: 12,
    messages: [
      { role: 'user', content: INPUT },
      { role: 'assistant', content: null, tool_calls: [{ id: call.call_id, type: 'function', function: { name: call.name, arguments: call.arguments } }] },
      { role: 'tool', tool_call_id: call.call_id, content: result },
    ],
  });
  eq(next.usage.input_tokens, chat.usage.prompt_tokens, 'the same prompt');
  eq(next.output_text, chat.choices[0].message.content ?? '', 'the same greedy answer');
  eq(next.output.map((o) => o.type), ['message']);
});

// ---- text.format ----------------------------------------------------------------------------

test('text.format json_schema (zodTextFormat, responses.parse): output_parsed validates; streamed too', async () => {
  const Person = z.object({ name: z.string().max(20), age: z.number().int().min(0).max(150), tags: z.array(z.enum(['a', 'b'])).max(3) });
  const fmt = zodTextFormat(Person, 'person');
  for (const seed of [1, 2]) {
    const r = await client.responses.parse({ model: MODEL, input: 'A person:', text: { format: fmt }, temperature: 1, seed, max_output_tokens: 200 });
    eq(r.status, 'completed');
    const p = r.output_parsed;
    assert(p && typeof p.name === 'string' && p.name.length <= 20 && Number.isInteger(p.age) && p.age <= 150, JSON.stringify(p));
    Person.parse(p);
    eq(r.text.format.type, 'json_schema');
    eq(r.text.format.name, 'person');
    const s = await fold(await client.responses.create({ model: MODEL, input: 'A person:', text: { format: fmt }, temperature: 1, seed, max_output_tokens: 200, stream: true }));
    eq(s.items.length, 1);
    eq(s.items[0].acc, r.output_text, `seed ${seed}: streamed text`);
  }
  const j = await client.responses.create({ model: MODEL, input: 'JSON:', text: { format: { type: 'json_object' } }, temperature: 1, seed: 3, max_output_tokens: 200 });
  const v = JSON.parse(j.output_text);
  assert(v && typeof v === 'object' && !Array.isArray(v), j.output_text);
  const t = await client.responses.create({ model: MODEL, input: 'Hi', text: { format: { type: 'text' } }, temperature: 0, max_output_tokens: 5 });
  eq(t.text.format, { type: 'text' });
});

// ---- refusals ----------------------------------------------------------------------------------

async function bad(req, param, needle, c = client) {
  try {
    await c.responses.create(req);
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, String(e));
    eq(e.error?.param ?? e.param, param, `param (${e.message})`);
    assert(String(e.message).includes(needle), `message '${e.message}' lacks '${needle}'`);
    return e;
  }
  throw new Error(`accepted ${JSON.stringify(req)}`);
}

test('bad tool and text.format requests are 400s naming the field', async () => {
  await bad({ ...base, tools: [{ type: 'web_search' }] }, 'tools', "'web_search' tools are not supported");
  await bad({ ...base, tools: [...tools, { type: 'file_search', vector_store_ids: ['vs_1'] }] }, 'tools', "tools[2].type: 'file_search'");
  await bad({ ...base, tools: [{ type: 'function', parameters: {} }] }, 'tools', 'tools[0].name');
  await bad({ ...base, tool_choice: { type: 'function', name: 'nope' } }, 'tool_choice', 'does not match');
  await bad({ ...base, tool_choice: { type: 'web_search_preview' } }, 'tool_choice', "'web_search_preview' is not supported");
  await bad({ ...base, tools: undefined, tool_choice: 'required' }, 'tool_choice', '`tools` must be set');
  await bad({ ...base, tool_choice: 'required', text: { format: { type: 'json_object' } } }, 'tool_choice', 'text.format');
  await bad({ ...base, input: [{ type: 'function_call_output', call_id: 'call_x', output: 'r' }] }, 'input', "no function_call item before it has call_id 'call_x'");
  await bad({ ...base, input: [{ type: 'function_call_output', output: 'r' }] }, 'input', 'input[0].call_id: field required');
  await bad({ ...base, input: [{ type: 'function_call', call_id: 'c', name: 'get_weather', arguments: '{oops' }] }, 'input', 'input[0].arguments: not valid JSON');
  // an unsupported schema keyword: the chat route's message, named text.format
  const schema = { type: 'object', properties: { n: { type: 'integer', multipleOf: 3 } }, required: ['n'] };
  const e = await bad({ model: MODEL, input: 'x', text: { format: { type: 'json_schema', name: 'n', schema } } }, 'text.format', 'multipleOf');
  let chatMessage = null;
  await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema } } })
    .catch((err) => { chatMessage = err.message; });
  assert(chatMessage, 'chat accepted the schema');
  eq(e.message.replace('text.format: ', ''), chatMessage.replace('response_format: ', ''), 'the same refusal as chat');
});

run();
