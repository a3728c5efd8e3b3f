// server_openai.mjs -- the official `openai` npm client against `pagellm serve`.
// References: `pagellm generate` (the offline engine path) for greedy text, token ids and
// logprobs; @huggingface/jinja rendering the model's own chat template for chat prompts;
// the OpenAI API shapes the client itself parses (errors map to its error classes).
import OpenAI from 'openai';
import { Template } from '@huggingface/jinja';
import { readFileSync } from 'node:fs';
import { test, run, assert, eq, generate, http, auth, MODEL, MODEL_DIR, BASE_URL, API_KEY } from './server_util.mjs';

const client = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });
const tcfg = JSON.parse(readFileSync(`${MODEL_DIR}/tokenizer_config.json`, 'utf8'));

// The chat prompt as transformers would render it, tokenized by the server without
// adding special tokens (the template places them), as vLLM does for chat.
async function chatPromptIds(messages) {
  const rendered = new Template(tcfg.chat_template).render({
    messages, bos_token: tcfg.bos_token, eos_token: tcfg.eos_token, add_generation_prompt: true,
  });
  const r = await http('POST', '/tokenize', { prompt: rendered, add_special_tokens: false }, auth);
  eq(r.status, 200, 'tokenize');
  return r.json.tokens;
}

test('models.list reports the served names and max_model_len', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert(ids.includes(MODEL), `served names ${ids}`);
  assert(page.data.every((m) => m.object === 'model' && m.max_model_len > 0));
});

test('completion (greedy) text and token counts equal pagellm generate', async () => {
  const prompt = 'The quick brown fox';
  const [ref] = generate([{ text: prompt }], 12);
  const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 12, temperature: 0 });
  eq(r.object, 'text_completion');
  eq(r.choices[0].text, ref.outputs[0].text, 'text');
  eq(r.choices[0].finish_reason, ref.outputs[0].finish_reason, 'finish_reason');
  eq(r.usage.prompt_tokens, ref.prompt_token_ids.length, 'prompt_tokens');
  eq(r.usage.completion_tokens, ref.outputs[0].token_ids.length, 'completion_tokens');
  eq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('completion default max_tokens is 16', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'Once upon', temperature: 0, ignore_eos: true });
  eq(r.usage.completion_tokens, 16);
});

test('token-id prompts (a list of lists) each equal pagellm generate', async () => {
  const prompts = [[956, 72, 101, 381], [956, 300, 301], [956, 5, 6, 7, 8, 9]];
  const refs = generate(prompts.map((ids) => ({ ids })), 10);
  const r = await client.completions.create({ model: MODEL, prompt: prompts, max_tokens: 10, temperature: 0 });
  eq(r.choices.length, 3);
  for (let i = 0; i < 3; i++) {
    eq(r.choices[i].index, i);
    eq(r.choices[i].text, refs[i].outputs[0].text, `prompt ${i}`);
  }
  eq(r.usage.prompt_tokens, prompts.flat().length);
});

test('streamed completion concatenates to the non-streamed text; usage chunk last', async () => {
  const prompt = 'In a hole in the ground';
  const full = await client.completions.create({ model: MODEL, prompt, max_tokens: 20, temperature: 0 });
  const stream = await client.completions.create({
    model: MODEL, prompt, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '', finish = null, usage = null, after_usage = 0;
  for await (const chunk of stream) {
    if (usage) after_usage++;
    if (chunk.usage) { usage = chunk.usage; eq(chunk.choices.length, 0, 'usage chunk has no choices'); continue; }
    eq(chunk.object, 'text_completion');
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  eq(text, full.choices[0].text);
  eq(finish, full.choices[0].finish_reason);
  eq(usage, full.usage);
  eq(after_usage, 0);
});

test('logprobs (completions format) match pagellm generate --logprobs', async () => {
  const prompt = 'Hello world';
  const [ref] = generate([{ text: prompt }], 6, ['--logprobs', '3']);
  const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 6, temperature: 0, logprobs: 3 });
  const lp = r.choices[0].logprobs;
  eq(lp.tokens.length, 6);
  eq(lp.token_logprobs.length, 6);
  eq(lp.top_logprobs.length, 6);
  eq(lp.text_offset[0], 0);
  for (let t = 0; t < 6; t++) {
    const refTop = ref.outputs[0].logprobs[t];
    // greedy: the chosen token is the most likely one
    assert(Math.abs(lp.token_logprobs[t] - refTop[0].logprob) < 1e-3, `step ${t}: ${lp.token_logprobs[t]} vs ${refTop[0].logprob}`);
    const vals = Object.values(lp.top_logprobs[t]).sort((a, b) => b - a);
    assert(vals.length >= 1 && vals.length <= 4);
    assert(Math.abs(vals[0] - refTop[0].logprob) < 1e-3, `top at ${t}`);
    assert(lp.text_offset[t] <= (lp.text_offset[t + 1] ?? Infinity));
  }
});

test('echo with logprobs: prompt positions first; prompt_logprobs match pagellm generate', async () => {
  const prompt = 'Hello world';
  const [ref] = generate([{ text: prompt }], 4, ['--prompt-logprobs', '2']);
  const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 4, temperature: 0, echo: true, logprobs: 2 });
  const c = r.choices[0];
  eq(c.text, prompt + ref.outputs[0].text);
  const np = ref.prompt_token_ids.length;
  eq(c.logprobs.tokens.length, np + 4);
  eq(c.logprobs.token_logprobs[0], null);
  eq(c.logprobs.top_logprobs[0], null);
  eq(c.prompt_logprobs.length, np);
  eq(c.prompt_logprobs[0], null);
  for (let i = 1; i < np; i++) {
    const e = c.prompt_logprobs[i][String(ref.prompt_token_ids[i])];
    assert(e && Math.abs(e.logprob - c.logprobs.token_logprobs[i]) < 1e-6, `position ${i}`);
    assert(e.rank >= 1);
    const want = ref.prompt_logprobs[i].find((x) => x.token_id === ref.prompt_token_ids[i]);
    assert(Math.abs(e.logprob - want.logprob) < 1e-4, `position ${i}: ${e.logprob} vs ${want.logprob}`);
    const top = ref.prompt_logprobs[i][0];
    assert(Math.abs(c.prompt_logprobs[i][String(top.token_id)].logprob - top.logprob) < 1e-4, `top at ${i}`);
  }
  const s = await client.completions.create({ model: MODEL, prompt, max_tokens: 4, temperature: 0, echo: true, stream: true });
  let text = '';
  for await (const ch of s) text += ch.choices[0]?.text ?? '';
  eq(text, c.text);
});

test('stop string cuts the text and is reported as stop_reason', async () => {
  const prompt = 'Hello world';
  const [ref] = generate([{ text: prompt }], 16, ['--ignore-eos']);
  const full = ref.outputs[0].text;
  const stop = full.slice(4, 7);
  const at = full.indexOf(stop);
  assert(stop.length === 3 && at >= 0);
  const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 16, temperature: 0, stop: [stop], ignore_eos: true });
  eq(r.choices[0].text, full.slice(0, at));
  eq(r.choices[0].finish_reason, 'stop');
  eq(r.choices[0].stop_reason, stop);
  const s = await client.completions.create({ model: MODEL, prompt, max_tokens: 16, temperature: 0, stop: stop, ignore_eos: true, stream: true });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  eq(text, full.slice(0, at), 'streamed text holds back the stop string');
});

test('n > 1 with a seed: n choices, reproducible, usage sums them', async () => {
  const req = { model: MODEL, prompt: 'Tell me', max_tokens: 8, temperature: 1.0, n: 3, seed: 1234, ignore_eos: true };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  eq(a.choices.length, 3);
  eq(a.choices.map((c) => c.index), [0, 1, 2]);
  eq(a.choices.map((c) => c.text), b.choices.map((c) => c.text), 'same seed, same samples');
  eq(a.choices.map((c) => c.finish_reason), ['length', 'length', 'length']);
  eq(a.usage.completion_tokens, 24);
});

test('vLLM sampling extras are accepted', async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'abc', max_tokens: 4, temperature: 0.7, top_k: 5, min_p: 0.05,
    repetition_penalty: 1.1, stop_token_ids: [957], ignore_eos: false, min_tokens: 2,
    skip_special_tokens: true, include_stop_str_in_output: false, seed: 7, prompt_logprobs: 1,
  });
  assert(r.choices[0].text.length >= 0 && r.usage.completion_tokens >= 2);
});

test('chat (greedy) content equals pagellm generate on the jinja-rendered prompt', async () => {
  const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a colour.' }];
  const ids = await chatPromptIds(messages);
  const [ref] = generate([{ ids }], 10);
  const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0 });
  eq(r.object, 'chat.completion');
  eq(r.choices[0].message.role, 'assistant');
  eq(r.choices[0].message.content, ref.outputs[0].text);
  eq(r.usage.prompt_tokens, ids.length);
  // content as an array of text parts renders the same as the joined string
  const parts = await client.chat.completions.create({
    model: MODEL, max_tokens: 10, temperature: 0,
    messages: [messages[0], { role: 'user', content: [{ type: 'text', text: 'Name a colour.' }] }],
  });
  eq(parts.choices[0].message.content, ref.outputs[0].text);
});

test('chat max_tokens default is the rest of the context', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], temperature: 0, ignore_eos: true, max_completion_tokens: 5 });
  eq(r.usage.completion_tokens, 5);
  const models = await client.models.list();
  const maxLen = models.data[0].max_model_len;
  const big = await http('POST', '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: maxLen }, auth);
  eq(big.status, 400);
  assert(/maximum context length/.test(big.json.error.message));
});

test('streamed chat: role first, content concatenates, finish chunk, usage', async () => {
  const messages = [{ role: 'user', content: 'Say something.' }];
  const full = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12, temperature: 0 });
  const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  eq(chunks[0].object, 'chat.completion.chunk');
  eq(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  eq(text, full.choices[0].message.content);
  const fin = chunks.filter((c) => c.choices[0]?.finish_reason);
  eq(fin.length, 1);
  eq(fin[0].choices[0].finish_reason, full.choices[0].finish_reason);
  eq(chunks.at(-1).choices.length, 0);
  eq(chunks.at(-1).usage, full.usage);
});

test('chat logprobs: content entries with bytes and top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs.content;
  eq(lp.length, r.usage.completion_tokens);
  for (const e of lp) {
    eq(e.top_logprobs.length, 2);
    assert(Array.isArray(e.bytes) && typeof e.token === 'string');
    eq(Buffer.from(e.bytes).toString('utf8'), e.token);
    assert(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6, 'greedy picks the top token');
  }
});

test('n > 1 chat stream: one role chunk and one finish per choice', async () => {
  const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, n: 2, temperature: 0.9, seed: 3, stream: true });
  const roles = new Set(), fins = new Set();
  for await (const c of stream) {
    for (const ch of c.choices) {
      if (ch.delta?.role) roles.add(ch.index);
      if (ch.finish_reason) { fins.add(ch.index); assert(['stop', 'length'].includes(ch.finish_reason), ch.finish_reason); }
    }
  }
  eq([...roles].sort(), [0, 1]);
  eq([...fins].sort(), [0, 1]);
});

test('errors map to the client error classes', async () => {
  await client.completions.create({ model: 'no-such-model', prompt: 'x' }).then(
    () => { throw new Error('accepted an unknown model'); },
    (e) => { assert(e instanceof OpenAI.NotFoundError, e.constructor.name); eq(e.error.param, 'model'); });
  await client.completions.create({ model: MODEL, prompt: 'x', temperature: 9 }).then(
    () => { throw new Error('accepted temperature 9'); },
    (e) => { assert(e instanceof OpenAI.BadRequestError, e.constructor.name); eq(e.error.param, 'temperature'); });
  await client.completions.create({ model: MODEL, prompt: 'x', suffix: 'y' }).then(
    () => { throw new Error('accepted suffix'); },
    (e) => { assert(e instanceof OpenAI.BadRequestError); eq(e.error.param, 'suffix'); });
  await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { not: {} } } } } } }).then(
    () => { throw new Error('accepted a schema with not'); },
    (e) => { assert(e instanceof OpenAI.BadRequestError); eq(e.error.param, 'response_format'); });
  await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }).then(
    () => { throw new Error('accepted tool_choice auto without --enable-auto-tool-choice'); },
    (e) => { assert(e instanceof OpenAI.BadRequestError); eq(e.error.param, 'tool_choice'); assert(e.message.includes('--enable-auto-tool-choice'), e.message); });
  if (API_KEY !== 'EMPTY') {
    const wrong = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY + 'x', maxRetries: 0 });
    await wrong.models.list().then(
      () => { throw new Error('accepted a wrong key'); },
      (e) => assert(e instanceof OpenAI.AuthenticationError, e.constructor.name));
  }
});

await run();
