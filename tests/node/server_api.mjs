// server_api.mjs -- the API surface beyond completions and chat, with the official `openai`
// npm client against `pagellm serve`: models.retrieve, embeddings.create, responses.create
// (full and streamed, and the client's responses.stream accumulator), and chat bodies with
// fields the server does not know (store, metadata, service_tier: ignored, as vLLM).
// References: the server's own chat completions (greedy) for the Responses text, /tokenize for
// token counts, the model's config.json for the embedding size; with PL_REASONING_BASE_URL (a
// server started with --reasoning-parser deepseek_r1 and a template that opens <think>), the
// main server's chat answer under the same template is the reasoning the parser must return.
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';
import { test, run, assert, eq, http, auth, MODEL, MODEL_DIR, BASE_URL, API_KEY } from './server_util.mjs';

const client = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });
const noKey = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
const config = JSON.parse(readFileSync(`${MODEL_DIR}/config.json`, 'utf8'));
const greedy = { temperature: 0 };

async function rejects(promise, status, needle) {
  try {
    await promise;
  } catch (e) {
    eq(e.status, status, `status (${e.message})`);
    if (needle) assert(String(e.message).includes(needle), `message '${e.message}' lacks '${needle}'`);
    return e;
  }
  throw new Error(`expected a ${status} error`);
}

async function tokenCount(text) {
  const r = await http('POST', '/tokenize', { prompt: text }, auth);
  eq(r.status, 200, 'tokenize');
  return r.json.count;
}

// ---- models ------------------------------------------------------------------------------

test('models.retrieve: each served name; unknown id 404; the API key is required', async () => {
  const m = await client.models.retrieve(MODEL);
  eq(m.id, MODEL);
  eq(m.object, 'model');
  eq(m.owned_by, 'pagellm');
  assert(m.max_model_len > 0 && typeof m.created === 'number');
  const list = await client.models.list();
  for (const e of list.data) eq((await client.models.retrieve(e.id)).id, e.id);
  const e = await rejects(client.models.retrieve('no-such-model'), 404, 'does not exist');
  assert(e instanceof OpenAI.NotFoundError, 'NotFoundError');
  await rejects(noKey.models.retrieve(MODEL), 401);
  await rejects(noKey.models.retrieve('no-such-model'), 401);
});

// ---- embeddings --------------------------------------------------------------------------

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
function close(a, b, tol, msg) {
  eq(a.length, b.length, `${msg}: length`);
  for (let i = 0; i < a.length; i++) assert(Math.abs(a[i] - b[i]) <= tol, `${msg}: [${i}] ${a[i]} vs ${b[i]}`);
}

test('embeddings.create: one input, base64 (the client default) and float agree', async () => {
  const text = 'Paged attention keeps the KV cache in blocks.';
  const b64 = await client.embeddings.create({ model: MODEL, input: text }); // decoded by the client
  const flt = await client.embeddings.create({ model: MODEL, input: text, encoding_format: 'float' });
  eq(b64.object, 'list');
  eq(b64.data.length, 1);
  eq(b64.data[0].object, 'embedding');
  eq(b64.data[0].index, 0);
  eq(flt.data[0].embedding.length, config.hidden_size, 'the hidden size');
  // base64 carries the float32 values exactly; float is the same float32 values as JSON numbers
  close(Array.from(b64.data[0].embedding), flt.data[0].embedding.map(Math.fround), 0, 'base64 vs float');
  assert(Math.abs(norm(flt.data[0].embedding) - 1) < 1e-5, 'normalized');
  eq(flt.usage.prompt_tokens, await tokenCount(text), 'prompt_tokens');
  eq(flt.usage.total_tokens, flt.usage.prompt_tokens);
  eq(flt.model, MODEL);
  // raw base64 from the server: little-endian float32
  const raw = await http('POST', '/v1/embeddings', { model: MODEL, input: text, encoding_format: 'base64' }, auth);
  eq(raw.status, 200);
  const buf = Buffer.from(raw.json.data[0].embedding, 'base64');
  eq(buf.length, 4 * config.hidden_size);
  for (let i = 0; i < config.hidden_size; i++) eq(buf.readFloatLE(4 * i), Math.fround(flt.data[0].embedding[i]), `value ${i}`);
});

test('embeddings.create: a batch in order, each equal to its single embedding', async () => {
  const inputs = ['first input', 'a second, longer input text', 'x'];
  const batch = await client.embeddings.create({ model: MODEL, input: inputs, encoding_format: 'float' });
  eq(batch.data.map((d) => d.index), [0, 1, 2]);
  let tokens = 0;
  for (let i = 0; i < inputs.length; i++) {
    const one = await client.embeddings.create({ model: MODEL, input: inputs[i], encoding_format: 'float' });
    close(batch.data[i].embedding, one.data[0].embedding, 1e-5, `input ${i}`);
    tokens += one.usage.prompt_tokens;
  }
  eq(batch.usage.prompt_tokens, tokens);
  // different inputs give different vectors
  assert(batch.data[0].embedding.some((x, k) => Math.abs(x - batch.data[1].embedding[k]) > 1e-3), 'distinct');
  // token ids as input: the same vector as the text they encode
  const ids = (await http('POST', '/tokenize', { prompt: inputs[0] }, auth)).json.tokens;
  const byIds = await client.embeddings.create({ model: MODEL, input: [ids], encoding_format: 'float' });
  close(byIds.data[0].embedding, batch.data[0].embedding, 1e-5, 'token ids');
});

test('embeddings.create: dimensions and bad inputs are refused clearly', async () => {
  const e = await rejects(client.embeddings.create({ model: MODEL, input: 'x', dimensions: 16 }), 400, 'dimensions');
  assert(e instanceof OpenAI.BadRequestError);
  eq(e.param, 'dimensions');
  await rejects(client.embeddings.create({ model: MODEL, input: 'x', encoding_format: 'hex' }), 400, 'encoding_format');
  await rejects(client.embeddings.create({ model: MODEL, input: [] }), 400, 'empty');
  await rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }), 404, 'does not exist');
  await rejects(noKey.embeddings.create({ model: MODEL, input: 'x' }), 401);
});

// ---- responses ---------------------------------------------------------------------------

const INSTR = 'Answer in one word.';
const INPUT = 'Name a colour.';
async function chatReference(maxTokens) {
  const c = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'system', content: INSTR }, { role: 'user', content: INPUT }],
    max_tokens: maxTokens, ...greedy, ignore_eos: true,
  });
  return c;
}

test('responses.create: output_text equals the chat answer; usage and status', async () => {
  const ref = await chatReference(12);
  const r = await client.responses.create({
    model: MODEL, instructions: INSTR, input: INPUT, max_output_tokens: 12, ...greedy, ignore_eos: true,
    store: false, metadata: { test: 'yes' },
  });
  eq(r.object, 'response');
  assert(r.id.startsWith('resp_'), r.id);
  eq(r.output_text, ref.choices[0].message.content, 'output_text');
  const msg = r.output.find((o) => o.type === 'message');
  eq(msg.role, 'assistant');
  eq(msg.content[0].type, 'output_text');
  eq(msg.content[0].text, r.output_text);
  eq(r.status, 'incomplete'); // cut by max_output_tokens (ignore_eos)
  eq(r.incomplete_details, { reason: 'max_output_tokens' });
  eq(r.usage.input_tokens, ref.usage.prompt_tokens);
  eq(r.usage.output_tokens, 12);
  eq(r.usage.total_tokens, ref.usage.prompt_tokens + 12);
  eq(r.metadata, { test: 'yes' });
  eq(r.instructions, INSTR);
  eq(r.store, false);
  // a message list with content parts renders as the chat messages do
  const r2 = await client.responses.create({
    model: MODEL, input: [{ role: 'system', content: INSTR }, { role: 'user', content: [{ type: 'input_text', text: INPUT }] }],
    max_output_tokens: 12, ...greedy, ignore_eos: true,
  });
  eq(r2.output_text, r.output_text, 'message-list input');
});

test('responses.create stream: the event sequence; deltas equal the full answer', async () => {
  const full = await client.responses.create({ model: MODEL, instructions: INSTR, input: INPUT, max_output_tokens: 10, ...greedy, ignore_eos: true });
  const stream = await client.responses.create({ model: MODEL, instructions: INSTR, input: INPUT, max_output_tokens: 10, ...greedy, ignore_eos: true, stream: true });
  const types = [];
  let text = '', seq = 0, last = null, done = null;
  for await (const ev of stream) {
    eq(ev.sequence_number, seq++, 'sequence_number');
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.output_text.done') done = ev.text;
    last = ev;
  }
  eq(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  eq(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete']);
  assert(types.filter((t) => t === 'response.output_text.delta').length >= 2, 'several deltas');
  eq(text, full.output_text, 'deltas');
  eq(done, full.output_text, 'output_text.done');
  eq(last.response.output[0].content[0].text, full.output_text);
  eq(last.response.usage, full.usage);
  // the client's accumulating helper builds the same answer
  const helper = client.responses.stream({ model: MODEL, instructions: INSTR, input: INPUT, max_output_tokens: 10, ...greedy, ignore_eos: true });
  const final = await helper.finalResponse();
  eq(final.output_text, full.output_text, 'responses.stream finalResponse');
});

test('responses.create: what is not supported is refused clearly', async () => {
  await rejects(client.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_123' }), 400, 'not stored');
  await rejects(client.responses.create({ model: MODEL, input: 'x', tools: [{ type: 'web_search' }] }), 400, "'web_search' tools are not supported");
  // function tools work (tests/node/server_responses_tools.mjs); auto needs the flag, as on chat
  await rejects(client.responses.create({ model: MODEL, input: 'x', tools: [{ type: 'function', name: 'f', parameters: {} }] }), 400, '--enable-auto-tool-choice');
  await rejects(client.responses.create({ model: MODEL, input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] }), 400, 'input_image');
  await rejects(client.responses.create({ model: MODEL, input: 'x', background: true }), 400, 'background');
  await rejects(noKey.responses.create({ model: MODEL, input: 'x' }), 401);
});

// ---- lenient bodies ---------------------------------------------------------------------------

test('chat with unknown fields (store, metadata, service_tier, ...) answers as without them', async () => {
  const body = { model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 8, ...greedy };
  const plain = await client.chat.completions.create(body);
  const extra = await client.chat.completions.create({
    ...body, store: false, metadata: { app: 'test' }, service_tier: 'auto', user: 'u-1',
    prediction: null, modalities: ['text'], some_future_field: { a: [1, 2] },
  });
  eq(extra.choices[0].message.content, plain.choices[0].message.content);
  eq(extra.usage, plain.usage);
  // a known field of the wrong type is still a 400 naming it
  const e = await rejects(client.chat.completions.create({ ...body, store: true, temperature: 'hot' }), 400, 'temperature');
  eq(e.param, 'temperature');
  // the same leniency on completions
  const c = await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 4, ...greedy, store: false, metadata: {} });
  eq(c.object, 'text_completion');
});

// ---- reasoning (a second server with --reasoning-parser deepseek_r1) ---------------------------

const REASON_URL = process.env.PL_REASONING_BASE_URL;
const THINK_TEMPLATE = process.env.PL_THINK_TEMPLATE;
if (REASON_URL) {
  const reasoner = new OpenAI({ baseURL: `${REASON_URL}/v1`, apiKey: 'none', maxRetries: 0 });
  test('reasoning parser deepseek_r1: the answer (no </think>) is all reasoning, streamed alike', async () => {
    const messages = [{ role: 'user', content: 'Think about colours.' }];
    // the reference: the main server's answer under the same template, without a parser
    const ref = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, ...greedy, chat_template: THINK_TEMPLATE });
    const text = ref.choices[0].message.content;
    assert(text.length > 0 && !text.includes('</think>'), 'the tiny model never closes the block');
    const r = await reasoner.chat.completions.create({ model: MODEL, messages, max_tokens: 16, ...greedy });
    eq(r.choices[0].message.reasoning_content, text, 'reasoning_content');
    eq(r.choices[0].message.content, null, 'content');
    const s = await reasoner.chat.completions.create({ model: MODEL, messages, max_tokens: 16, ...greedy, stream: true });
    let rs = '', cs = '';
    for await (const ch of s) {
      const d = ch.choices[0]?.delta ?? {};
      rs += d.reasoning_content ?? '';
      cs += d.content ?? '';
    }
    eq(rs, text, 'streamed reasoning');
    eq(cs, '', 'streamed content');
    // the Responses API shows it as a reasoning item
    const resp = await reasoner.responses.create({ model: MODEL, input: 'Think about colours.', max_output_tokens: 16, ...greedy });
    const item = resp.output.find((o) => o.type === 'reasoning');
    eq(item?.content?.[0]?.text, text, 'reasoning item');
    eq(resp.output_text, '');
  });
}

run();
