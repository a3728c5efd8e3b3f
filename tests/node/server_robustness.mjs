// server_robustness.mjs -- bad input, protection and load against `pagellm serve`.
// Every bad request must get its status and an OpenAI error object {error: {message, type,
// param, code}} while the server keeps serving others; 200 concurrent streams must all give
// the text `pagellm generate` gives for their prompt; a client that disconnects mid-stream
// must free its KV blocks (vllm:kv_cache_usage_perc back to 0 in /metrics).
// Env (besides server_util's): PL_MAX_BODY_BYTES, PL_KEEP_ALIVE_S (the server's settings).
import OpenAI from 'openai';
import net from 'node:net';
import { test, run, assert, eq, generate, http, auth, metric, sleep, MODEL, BASE_URL, API_KEY } from './server_util.mjs';

const client = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });
const MAX_BODY = Number(process.env.PL_MAX_BODY_BYTES ?? 65536);
const KEEP_ALIVE_S = Number(process.env.PL_KEEP_ALIVE_S ?? 2);
const url = new URL(BASE_URL);

function isError(r, status, param) {
  eq(r.status, status, `status (${r.text.slice(0, 200)})`);
  const e = r.json?.error;
  assert(e && typeof e.message === 'string' && e.message.length > 0, `error object: ${r.text.slice(0, 200)}`);
  eq(e.code, status, 'error.code');
  assert(typeof e.type === 'string');
  if (param !== undefined) eq(e.param, param, 'error.param');
}

async function stillServing() {
  const r = await client.completions.create({ model: MODEL, prompt: 'ok', max_tokens: 2, temperature: 0 });
  eq(r.choices.length, 1);
}

test('malformed JSON, wrong types and out-of-range values: 400 naming the field', async () => {
  isError(await http('POST', '/v1/completions', '{"model": "x", "prompt": ', auth), 400, null);
  isError(await http('POST', '/v1/completions', '"just a string"', auth), 400, null);
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 5 }, auth), 400, 'prompt');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 'ten' }, auth), 400, 'max_tokens');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 0 }, auth), 400, 'max_tokens');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', top_p: 1.5 }, auth), 400, 'top_p');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', n: -1 }, auth), 400, 'n');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', logprobs: 100 }, auth), 400, 'logprobs');
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: [1, 2, 99999999] }, auth), 400, 'prompt');
  // an unknown field is ignored (vLLM's leniency: server_api.mjs); a known one beside it is checked
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', frobnicate: true, presence_penalty: 'lots' }, auth), 400, 'presence_penalty');
  isError(await http('POST', '/v1/chat/completions', { model: MODEL, messages: 'hi' }, auth), 400, 'messages');
  isError(await http('POST', '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], temperature: -0.5 }, auth), 400, 'temperature');
  await stillServing();
});

test('unknown model 404, unknown route 404, wrong method 405', async () => {
  isError(await http('POST', '/v1/completions', { model: 'gpt-4o', prompt: 'x' }, auth), 404, 'model');
  isError(await http('POST', '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }, auth), 404, 'model');
  isError(await http('GET', '/v1/nothing-here', undefined, auth), 404);
  const r = await http('GET', '/v1/chat/completions', undefined, auth);
  isError(r, 405);
  eq(r.headers.get('allow'), 'POST');
  await stillServing();
});

test('missing or wrong API key: 401, also on /tokenize and unknown /v1/ routes; /health and /metrics stay open', async () => {
  if (API_KEY === 'EMPTY') return;
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x' }), 401);
  isError(await http('POST', '/v1/completions', { model: MODEL, prompt: 'x' }, { Authorization: `Bearer ${API_KEY}0` }), 401);
  isError(await http('GET', '/v1/models', undefined, { Authorization: API_KEY }), 401);
  isError(await http('POST', '/tokenize', { model: MODEL, prompt: 'x' }), 401);
  isError(await http('POST', '/detokenize', { model: MODEL, tokens: [1] }), 401);
  isError(await http('GET', '/v1/nothing-here'), 401);
  isError(await http('GET', '/v1/chat/completions'), 401);
  eq((await http('GET', '/health')).status, 200);
  eq((await http('GET', '/metrics')).status, 200);
});

// Raw HTTP on one connection: writes `head`, resolves with what the server sent before it
// closed (or null after the hang guard).
function rawExchange(head, guardMs = 30000) {
  return new Promise((resolve) => {
    const sock = net.connect(Number(url.port), url.hostname);
    let got = '';
    const timer = setTimeout(() => { sock.destroy(); resolve(null); }, guardMs);
    sock.on('connect', () => sock.write(head));
    sock.on('data', (d) => { got += d.toString('latin1'); });
    sock.on('error', () => {});
    sock.on('close', () => { clearTimeout(timer); resolve(got); });
  });
}

test('a request without the key is refused before its body is read', async () => {
  if (API_KEY === 'EMPTY') return;
  // a megabyte announced, never sent: the answer can only come from the headers
  const got = await rawExchange('POST /v1/completions HTTP/1.1\r\nHost: x\r\n' +
    'Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n');
  assert(got !== null, 'no answer before the body');
  assert(got.startsWith('HTTP/1.1 401'), got.slice(0, 200));
  await stillServing();
});

test('framing: chunked bodies work, other codings 501, both lengths 400, NUL bytes 400', async () => {
  const head = (extra) => `POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
    `Authorization: Bearer ${API_KEY}\r\n${extra}\r\n`;
  const body = JSON.stringify({ model: MODEL, prompt: 'Hello world' });
  let got = await rawExchange(head('Transfer-Encoding: chunked\r\n') +
    `${(5).toString(16)}\r\n${body.slice(0, 5)}\r\n${(body.length - 5).toString(16)}\r\n${body.slice(5)}\r\n0\r\n\r\n`);
  assert(got?.startsWith('HTTP/1.1 200') && got.includes('"tokens"'), `chunked: ${got?.slice(0, 200)}`);
  got = await rawExchange(head('Transfer-Encoding: gzip\r\n'));
  assert(got?.startsWith('HTTP/1.1 501'), `gzip: ${got?.slice(0, 100)}`);
  got = await rawExchange(head('Transfer-Encoding: chunked\r\nContent-Length: 5\r\n'));
  assert(got?.startsWith('HTTP/1.1 400'), `both lengths: ${got?.slice(0, 100)}`);
  got = await rawExchange(`GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
    `Authorization: Bearer ${API_KEY}\0x\r\n\r\n`);
  assert(got?.startsWith('HTTP/1.1 400'), `NUL in Authorization: ${got?.slice(0, 100)}`);
  got = await rawExchange(`GET /v1/models%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
    `Authorization: Bearer ${API_KEY}\r\n\r\n`);
  assert(got?.startsWith('HTTP/1.1 400'), `%00: ${got?.slice(0, 100)}`);
  await stillServing();
});

test('a header trickled byte by byte is cut at the header deadline', async () => {
  const sock = net.connect(Number(url.port), url.hostname);
  await new Promise((r) => sock.once('connect', r));
  let closed = false;
  sock.on('close', () => { closed = true; });
  sock.on('error', () => {});
  sock.on('data', () => {});
  sock.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  // one byte every 200 ms (each would restart a per-byte timeout); bounded: 60 s
  const line = 'X-Trickle: abcdefghijklmnopqrstuvwxyz\r\n';
  for (let i = 0; i < 300 && !closed; i++) {
    await sleep(200);
    if (!closed) sock.write(line[i % line.length]);
  }
  assert(closed, 'the trickled header was never cut');
  sock.destroy();
  await stillServing();
});

test('huge bodies: 413', async () => {
  const big = JSON.stringify({ model: MODEL, prompt: 'x'.repeat(MAX_BODY) });
  isError(await http('POST', '/v1/completions', big, auth), 413);
  await stillServing();
});

test('a slow partial request is cut after the header timeout; others are served meanwhile', async () => {
  const sock = net.connect(Number(url.port), url.hostname);
  await new Promise((r) => sock.once('connect', r));
  sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Ty');
  const closed = new Promise((r) => sock.once('close', () => r(Date.now())));
  sock.on('error', () => {});
  sock.on('data', () => {});
  const t0 = Date.now();
  await stillServing();
  // a hang guard, not a deadline: the cut's time is checked from below only (CI is loaded)
  const t1 = await Promise.race([closed, sleep(120000).then(() => null)]);
  assert(t1 !== null, 'the partial request was never cut');
  assert(t1 - t0 >= (KEEP_ALIVE_S - 1) * 1000, `cut too early (${t1 - t0} ms)`);
  await stillServing();
});

test('/tokenize and /detokenize round-trip; /version', async () => {
  const t = await http('POST', '/tokenize', { model: MODEL, prompt: 'Hello world' }, auth);
  eq(t.status, 200);
  eq(t.json.count, t.json.tokens.length);
  const d = await http('POST', '/detokenize', { model: MODEL, tokens: t.json.tokens }, auth);
  eq(d.status, 200);
  assert(d.json.prompt.endsWith('Hello world'), d.json.prompt);
  const v = await http('GET', '/version');
  assert(typeof v.json.version === 'string');
});

test('200 concurrent streams all complete with the text pagellm generate gives', async () => {
  const N = 200, DISTINCT = 20, MAX_TOKENS = 6;
  const prompts = Array.from({ length: DISTINCT }, (_, i) => [956, 10 + i, 200 + 3 * i, 500 + (i % 7)]);
  const refs = generate(prompts.map((ids) => ({ ids })), MAX_TOKENS).map((r) => r.outputs[0].text);
  const jobs = Array.from({ length: N }, async (_, k) => {
    const i = k % DISTINCT;
    const s = await client.completions.create({ model: MODEL, prompt: prompts[i], max_tokens: MAX_TOKENS, temperature: 0, stream: true });
    let text = '';
    for await (const c of s) text += c.choices[0]?.text ?? '';
    return text === refs[i];
  });
  const ok = (await Promise.all(jobs)).filter(Boolean).length;
  eq(ok, N, 'streams with the right text');
});

test('a client disconnecting mid-stream aborts its request and frees its KV blocks', async () => {
  const abortedBefore = await metric('vllm:request_success_total{model_name="' + MODEL + '",engine="0",finished_reason="abort"}');
  const ctl = new AbortController();
  const s = await client.completions.create(
    { model: MODEL, prompt: 'A long story:', max_tokens: 1500, ignore_eos: true, temperature: 0, stream: true },
    { signal: ctl.signal });
  let n = 0;
  try {
    for await (const c of s) {
      // at the first chunk: 1500 tokens to go, so the request is still running whatever the load
      if (++n === 1) {
        eq(await metric('vllm:num_requests_running'), 1);
        assert((await metric('vllm:kv_cache_usage_perc')) > 0, 'blocks in use while streaming');
        ctl.abort();
      }
    }
  } catch (e) { /* the abort */ }
  let running = 1, usage = 1;
  for (const end = Date.now() + 120000; (running !== 0 || usage !== 0) && Date.now() < end;) { // hang guard
    await sleep(50);
    running = await metric('vllm:num_requests_running');
    usage = await metric('vllm:kv_cache_usage_perc');
  }
  eq(running, 0, 'running');
  eq(usage, 0, 'kv_cache_usage_perc');
  const abortedAfter = await metric('vllm:request_success_total{model_name="' + MODEL + '",engine="0",finished_reason="abort"}');
  eq(abortedAfter, abortedBefore + 1);
  await stillServing();
});

test('/metrics: vLLM names, histograms consistent with the traffic', async () => {
  const r = await http('GET', '/metrics');
  eq(r.status, 200);
  for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc',
    'vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:request_success_total',
    'vllm:num_preemptions_total', 'vllm:prefix_cache_queries_total', 'vllm:prefix_cache_hits_total',
    'vllm:time_to_first_token_seconds_bucket', 'vllm:inter_token_latency_seconds_bucket',
    'vllm:time_per_output_token_seconds_bucket', 'vllm:e2e_request_latency_seconds_bucket',
    'vllm:request_queue_time_seconds_bucket']) {
    assert(r.text.includes(name), `missing ${name}`);
  }
  const count = (h) => metric(`vllm:${h}_count`);
  const done = ['stop', 'length'].map((f) => metric(`vllm:request_success_total{model_name="${MODEL}",engine="0",finished_reason="${f}"}`));
  const finished = (await Promise.all(done)).reduce((a, b) => a + b, 0);
  assert(finished >= 200, `finished ${finished}`);
  assert((await count('e2e_request_latency_seconds')) >= finished);
  eq(await count('inter_token_latency_seconds'), await count('time_per_output_token_seconds'));
  const gen = await metric('vllm:generation_tokens_total');
  assert(gen >= 200 * 6, `generation tokens ${gen}`);
  // buckets are cumulative and end at the count
  const lines = r.text.split('\n').filter((l) => l.startsWith('vllm:time_to_first_token_seconds_bucket'));
  const vals = lines.map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
  for (let i = 1; i < vals.length; i++) assert(vals[i] >= vals[i - 1]);
  eq(vals.at(-1), await count('time_to_first_token_seconds'));
});

await run();
