// runpod_conformance.mjs -- drives `pagellm worker` through the conformance
// cases of docs/runpod-protocol.md section 6 against the fake job
// server (fake_runpod.mjs). Usage: node runpod_conformance.mjs PAGELLM MODEL_DIR
// Expected texts T(x) come from `pagellm generate` (greedy, ignore_eos): the
// offline API's generate path, independent of the worker's request path.
// Test knobs (docs/runpod.md): PL_RUNPOD_TAKE_TIMEOUT_MS shortens the 90 s
// long-poll abandonment (TK12), PL_RUNPOD_PING_MS sets the heartbeat period (HB1/HB4).
//
// No check depends on how fast anything runs (CI is a loaded 2-core machine): every
// wait polls a condition under a hang guard (GUARD), "no later than" is shown by cause
// and effect (a marker request the worker can only send after it acted, the fake holding
// a job in flight as long as the test needs, a 1-hour ping period for "at once"), and
// clock checks are lower bounds only ("not before"). The protocol's upper time bounds
// (poll again at once, retry waits of 2 s and 3 s) are the decisions unit-tested in
// tests/unit/test_runpod_rules.c (pl_rp_take_wait_ms, pl_rp_post_retry_delay_ms).
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn, execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeRunPod } from './fake_runpod.mjs';
import { GUARD, until, apiPort } from './worker_util.mjs';

const [PAGELLM, MODEL] = process.argv.slice(2);
// Failures are counted per scenario (AsyncLocalStorage follows each scenario's awaits).
const als = new AsyncLocalStorage();
const failedBy = new Map();
const covered = [];
function check(cond, id, msg) {
  if (!cond) {
    const name = als.getStore() || '?';
    failedBy.set(name, (failedBy.get(name) || 0) + 1);
    console.log(`FAIL ${id} (${name}): ${msg}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// T(x, n): computed up front (one `generate` per n) -- a synchronous child
// process inside a scenario would stall every fake server's event loop.
const refs = new Map();
function precompute(byN) {
  for (const [n, prompts] of Object.entries(byN)) {
    const args = ['generate', '--model', MODEL, '--temperature', '0', '--ignore-eos', '--max-tokens', String(n), '--json'];
    for (const p of prompts) args.push('--prompt', p);
    const out = execFileSync(PAGELLM, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n');
    out.forEach((line, i) => {
      const j = JSON.parse(line);
      refs.set(`${prompts[i]}\u0000${n}`, { text: j.outputs[0].text, nPrompt: j.prompt_token_ids.length });
    });
  }
}
function T(prompt, n) {
  const r = refs.get(`${prompt}\u0000${n}`);
  if (!r) throw new Error(`no reference for ${prompt} / ${n}`);
  return r;
}
precompute({ 2: ['a', 'b'], 3: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], 4: ['a', 'é'], 5: ['hi'], 7: ['hi'], 12: ['hi'] });

function startWorker(fake, extraEnv = {}, args = []) {
  const env = { ...process.env, ...(fake ? fake.env() : {}), MAX_CONCURRENCY: '1', ...extraEnv };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  // one compute thread each: several workers share the 2 CI cores
  const p = spawn(PAGELLM, ['worker', '--model', MODEL, '--threads', '1', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  p.out = ''; p.err = '';
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.err += d; });
  p.log = () => p.out + p.err;
  p.exited = new Promise((r) => p.on('exit', (code) => r(code)));
  return p;
}

// The worker's JSON log lines (RUNPOD_ENDPOINT_ID is set) so far.
const logLines = (w) => w.out.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
// Waits for a JSON log line of job id whose message matches re.
const waitJobLog = (w, id, re) => until(() => logLines(w).find((l) => l.requestId === id && re.test(l.message)), `log of ${id} ${re}`);

async function stopWorker(p) {
  if (p.exitCode === null) p.kill('SIGKILL');
  await p.exited;
}

// The invariants of 6.1 on every request the fake server saw.
function invariants(fake, id, key = 'test-key') {
  for (const r of fake.reqs) {
    check(r.headers.authorization === key, id, `${r.path}: Authorization '${r.headers.authorization}'`);
    if (r.kind === 'job-done' || r.kind === 'job-stream') {
      const jobId = r.path.split('/').pop();
      check(r.headers['content-type'] === 'application/x-www-form-urlencoded', id, `${r.path}: content-type ${r.headers['content-type']}`);
      check(r.headers['x-request-id'] === jobId, id, `${r.path}: X-Request-ID ${r.headers['x-request-id']}`);
      check(r.headers.charset === 'utf-8', id, `${r.path}: charset header`);
      check(r.path.split('/')[4] === 'w1', id, `${r.path}: worker segment`);
      let b = null;
      try { b = JSON.parse(r.body); } catch { check(false, id, `${r.path}: body not JSON: ${r.body}`); }
      if (b && 'error' in b) check(typeof b.error === 'string', id, `${r.path}: error not a string`);
    }
  }
  const doneAt = {};
  for (const r of fake.reqs) {
    if (r.kind !== 'job-done' && r.kind !== 'job-stream') continue;
    const j = r.path.split('/').pop();
    if (r.kind === 'job-done' && !(j in doneAt)) doneAt[j] = r;
    else if (j in doneAt && r !== doneAt[j]) {
      const retry = r.kind === 'job-done' && r.body === doneAt[j].body;
      check(retry, id, `post for job ${j} after its final job-done`);
    }
  }
}

const body = (r) => JSON.parse(r.body);
const jobTake = (id, input, extra = {}) => ({ json: { id, input, ...extra } });

// Pushes one job and waits for its (first) job-done.
async function runJob(fake, id, input, timeout = GUARD) {
  fake.takeQ.push(jobTake(id, input));
  return fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/' + id), timeout);
}

// ---------------------------------------------------------------- scenarios

async function scenarioMain() {
  const fake = await new FakeRunPod().start();
  let nStopEmpty = 0;
  fake.stopQ.push({ json: { jobsToStop: [] } });
  const t0 = Date.now();
  const w = startWorker(fake);
  try {
    // TK1, HB1, ST1
    const take1 = await fake.waitFor((r) => r.kind === 'job-take' || r.kind === 'job-take-batch');
    check(take1.path === '/v2/ep/job-take/w1' && take1.query.gpu === 'SIM' && take1.query.job_in_progress === '0', 'TK1', `first take ${take1.path}?${take1.rawQuery}`);
    // polling goes on after each 204 (at once: pl_rp_take_wait_ms, unit-tested)
    await until(() => fake.of('job-take').length >= 3, 'three takes');
    check(fake.of('job-take').every((t) => t.path === '/v2/ep/job-take/w1' && t.query.job_in_progress === '0'), 'TK1', 'take paths');
    // after the empty list the next stop poll is >= 1 s later (a lower bound: load only adds)
    await until(() => fake.of('job-stop').length >= 2, 'two stop polls');
    const stops = fake.of('job-stop');
    check(stops[0].path === '/v2/ep/job-stop/w1' && stops[0].rawQuery === 'gpu=SIM', 'ST1', `stop polls ${stops.map((s) => s.path + '?' + s.rawQuery)}`);
    check(stops[1].t - stops[0].t >= 1000, 'ST1', `poll after an empty list ${stops[1].t - stops[0].t} ms later`);
    covered.push('TK1', 'ST1');

    // RS1 / RS17: simple batch, T(x) from generate
    const ta = T('a', 4), tb = T('é', 4);
    let d = await runJob(fake, 'rs1', { prompts: ['a', 'é'], max_tokens: 4, temperature: 0, sampling_params: { ignore_eos: true } });
    check(d.query.isStream === 'false', 'RS1', 'isStream');
    check(JSON.stringify(body(d)) === JSON.stringify({ output: { results: [{ prompt: 'a', text: ta.text }, { prompt: 'é', text: tb.text }] } }), 'RS1', d.body);
    check(fake.of('job-stream', 'rs1').length === 0, 'RS1', 'stream posts for a batch job');
    check(d.raw.includes(Buffer.from('é')), 'RS17', 'non-ASCII prompt not sent as raw UTF-8');
    covered.push('RS1', 'RS17');

    // RS2, RS3, RS13: errors before a mode / in batch mode
    for (const [id, input, err] of [['rs2', { temperature: 0.5 }, "Missing 'prompts' in input"],
      ['rs3', { prompts: [] }, "Missing 'prompts' in input"],
      ['rs13', 'hello', 'Job input must be a JSON object']]) {
      d = await runJob(fake, id, input);
      check(d.body === JSON.stringify({ error: err }) && d.query.isStream === 'false', id.toUpperCase(), d.body);
      covered.push(id.toUpperCase());
    }

    // RS4: simple streaming, 5 tokens -> chunks of 1, 3, 1 tokens
    const thi5 = T('hi', 5);
    d = await runJob(fake, 'rs4', { prompt: 'hi', max_tokens: 5, engine_format: 'simple', sampling_params: { temperature: 0, ignore_eos: true } });
    let chunks = fake.of('job-stream', 'rs4');
    check(chunks.length === 3 && chunks.every((c) => c.query.isStream === 'false'), 'RS4', `${chunks.length} chunks`);
    check(d.query.isStream === 'true', 'RS4', 'final isStream');
    const texts = chunks.map((c) => body(c).output.text);
    check(texts.join('') === thi5.text, 'RS4', `texts ${JSON.stringify(texts)} vs ${JSON.stringify(thi5.text)}`);
    check(JSON.stringify(body(d).output) === JSON.stringify(chunks.map((c) => body(c).output)), 'RS4', 'final aggregate');
    covered.push('RS4');

    // RS6: bare prompt -> native, non-stream
    d = await runJob(fake, 'rs6', { prompt: 'hi' });
    chunks = fake.of('job-stream', 'rs6');
    const o6 = body(d).output;
    check(chunks.length === 1 && d.query.isStream === 'true' && JSON.stringify([body(chunks[0]).output]) === JSON.stringify(o6), 'RS6', d.body);
    check(o6[0].choices.length === 1 && o6[0].choices[0].tokens.length === 1 && o6[0].usage.input === thi5.nPrompt && o6[0].usage.output <= 100 && o6[0].usage.output >= 1, 'RS6', JSON.stringify(o6));
    covered.push('RS6');

    // RS7-RS9: native streaming with the batch-size schedule
    const sp = { max_tokens: 5, temperature: 0, ignore_eos: true };
    for (const [id, extra, n, want] of [['rs7', {}, 5, [1, 3, 1]],
      ['rs8', { max_batch_size: 2, min_batch_size: 1, batch_size_growth_factor: 2 }, 7, [1, 2, 2, 2]],
      ['rs9', { batch_size_growth_factor: 1 }, 5, [5]]]) {
      d = await runJob(fake, id, { prompt: 'hi', stream: true, sampling_params: { ...sp, max_tokens: n }, ...extra });
      chunks = fake.of('job-stream', id).map((c) => body(c).output);
      const sizes = chunks.map((c) => c.choices[0].tokens.length);
      check(JSON.stringify(sizes) === JSON.stringify(want), id.toUpperCase(), `sizes ${sizes}`);
      let cum = 0;
      for (const c of chunks) { cum += c.choices[0].tokens.length; check(c.usage.output === cum && c.usage.input === thi5.nPrompt, id.toUpperCase(), JSON.stringify(c.usage)); }
      const all = chunks.flatMap((c) => c.choices[0].tokens).join('');
      check(all === T('hi', n).text, id.toUpperCase(), `text ${JSON.stringify(all)}`);
      check(JSON.stringify(body(d).output) === JSON.stringify(chunks), id.toUpperCase(), 'final aggregate');
      covered.push(id.toUpperCase());
    }

    // RS10: messages, n = 2
    d = await runJob(fake, 'rs10', { messages: [{ role: 'user', content: 'hi' }], sampling_params: { n: 2, max_tokens: 3 } });
    const o10 = body(d).output;
    check(o10.length === 1 && o10[0].choices.length === 2 && o10[0].choices.every((c) => c.tokens.length === 1), 'RS10', d.body);
    covered.push('RS10');

    // RS11, RS12: errors after a mode was chosen (generator kind)
    d = await runJob(fake, 'rs11', { prompt: 'hi', sampling_params: { bogus: 1 } });
    check(d.query.isStream === 'true' && typeof body(d).error === 'string' && body(d).error.includes('bogus') && fake.of('job-stream', 'rs11').length === 0, 'RS11', d.body);
    d = await runJob(fake, 'rs12', { prompt: '' });
    check(d.body === JSON.stringify({ error: "Missing 'prompt' in input" }), 'RS12', d.body);
    covered.push('RS11', 'RS12');

    // OA1, OA8, OA6
    for (const [id, input] of [['oa1', { openai_route: '/v1/models', openai_input: {} }], ['oa8', { route: '/v1/models' }]]) {
      d = await runJob(fake, id, input);
      const o = body(d).output;
      check(Array.isArray(o) && o.length === 1 && o[0].object === 'list' && o[0].data[0].id === MODEL && o[0].data[0].object === 'model' && fake.of('job-stream', id).length === 1, id.toUpperCase(), d.body);
      covered.push(id.toUpperCase());
    }
    // OA2, OA3, OA5, OA7: chat / completions through the OpenAI route
    const chatIn = { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, ignore_eos: true, temperature: 0 };
    d = await runJob(fake, 'oa2', { openai_route: '/v1/chat/completions', openai_input: chatIn });
    let o = body(d).output;
    check(Array.isArray(o) && o[0].object === 'chat.completion' && o[0].choices[0].message.role === 'assistant' && o[0].usage.completion_tokens === 4 && o[0].model === MODEL, 'OA2', d.body);
    covered.push('OA2');
    d = await runJob(fake, 'oa3', { openai_route: '/v1/chat/completions', openai_input: { ...chatIn, max_tokens: 12, stream: true } });
    chunks = fake.of('job-stream', 'oa3').map((c) => body(c).output);
    const sse = chunks.join('');
    const events = sse.split('\n\n').filter((e) => e.length);
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
    const perChunk = chunks.map((c) => c.split('\n\n').length - 1);
    let want = [], left = events.length;
    for (let k = 1; left > 0; k = Math.min(k * 3, 50)) { want.push(Math.min(k, left)); left -= k; }
    check(chunks.every((c) => typeof c === 'string') && sse.endsWith('data: [DONE]\n\n') && events.every((e) => e.startsWith('data: ')) &&
      parsed.every((e) => e.object === 'chat.completion.chunk') && JSON.stringify(perChunk) === JSON.stringify(want) &&
      JSON.stringify(body(d).output) === JSON.stringify(chunks), 'OA3', `events per chunk ${perChunk} want ${want}`);
    const streamed = parsed.map((e) => e.choices[0].delta.content || '').join('');
    const whole = (await runJob(fake, 'oa3b', { openai_route: '/v1/chat/completions', openai_input: { ...chatIn, max_tokens: 12 } }));
    check(streamed === body(whole).output[0].choices[0].message.content, 'OA3', 'streamed text differs from the non-streamed answer');
    covered.push('OA3');
    d = await runJob(fake, 'oa5', { openai_route: '/v1/completions', openai_input: { model: MODEL, prompt: 'hi' } });
    o = body(d).output;
    check(o[0].object === 'text_completion' && o[0].usage.completion_tokens <= 16 && o[0].usage.completion_tokens >= 1, 'OA5', d.body);
    covered.push('OA5');
    d = await runJob(fake, 'oa7', { openai_route: '/v1/chat/completions', openai_input: { ...chatIn, model: 'wrong' } });
    check(typeof body(d).error === 'string' && body(d).error.includes('wrong') && JSON.parse(body(d).error).code === 404, 'OA7', d.body);
    covered.push('OA7');

    // SO1, SO2: structured output in the native form's sampling_params (vLLM's guided_json),
    // sampled: the text is JSON of the schema; a schema the compiler refuses names the keyword
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 }, s: { enum: ['x', 'y'] } }, required: ['n', 's'], additionalProperties: false };
    d = await runJob(fake, 'so1', { prompt: 'hi', sampling_params: { max_tokens: 100, temperature: 1, seed: 4, guided_json: schema } });
    const so1 = body(d).output[0].choices[0].tokens.join('');
    let v1 = null;
    try { v1 = JSON.parse(so1); } catch { /* checked below */ }
    check(v1 && Number.isInteger(v1.n) && v1.n >= 0 && v1.n <= 9 && ['x', 'y'].includes(v1.s) && Object.keys(v1).length === 2, 'SO1', so1);
    d = await runJob(fake, 'so2', { prompt: 'hi', sampling_params: { guided_json: { type: 'string', format: 'color' } } });
    check(typeof body(d).error === 'string' && body(d).error.includes('color'), 'SO2', d.body);
    covered.push('SO1', 'SO2');

    d = await runJob(fake, 'oa6', { openai_route: '/v1/nope', openai_input: { x: 1 } });
    check(typeof body(d).error === 'string' && body(d).error.includes('Invalid route'), 'OA6', d.body);
    covered.push('OA6');

    // TK7: a 400 then polling goes on at once, no job-done
    let n0 = fake.reqs.length;
    fake.takeQ.push({ status: 400, json: { id: 'tk7', input: { prompts: ['a'] } } });
    const r400 = await fake.waitFor((r) => r.kind === 'job-take', GUARD, n0);
    await fake.waitFor((r) => r.kind === 'job-take' && r !== r400, GUARD, n0); // polling goes on (at once: unit-tested)
    // TK9, TK10, TK11: ignored bodies
    fake.takeQ.push({ status: 200, ctype: 'text/html', body: JSON.stringify({ id: 'tk9', input: {} }) });
    fake.takeQ.push({ json: { input: { prompt: 'hi' } } });
    fake.takeQ.push({ status: 200, ctype: 'application/json', contentLength0: true });
    n0 = fake.reqs.length;
    await fake.waitFor((r) => r.kind === 'job-take', GUARD, fake.reqs.length);
    // the three scripted answers are consumed, then a real job proves polling continued
    d = await runJob(fake, 'after', { prompts: ['a'], max_tokens: 1 });
    check(fake.of('job-done', 'tk7').length === 0 && fake.of('job-done', 'tk9').length === 0, 'TK7/TK9', 'job-done for an ignored job');
    check(fake.reqs.filter((r) => r.kind === 'job-done').every((r) => !r.path.endsWith('/undefined')), 'TK10', 'job without id processed');
    covered.push('TK7', 'TK9', 'TK10', 'TK11');

    // a gzip-compressed take answer (the worker sends Accept-Encoding: gzip, deflate)
    fake.takeQ.push({ json: { id: 'gz', input: { prompts: ['a'], max_tokens: 1 } }, gzip: true });
    d = await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/gz'), GUARD);
    check(body(d).output.results.length === 1 && /gzip/.test(fake.of('job-take')[0].headers['accept-encoding']), 'GZ', d.body);
    covered.push('GZ');

    // more jobs than asked for (one free slot): only the first is held, the other refused and logged
    fake.takeQ.push({ json: [{ id: 'x1', input: { prompts: ['a'], max_tokens: 1 } }, { id: 'x2', input: { prompts: ['a'], max_tokens: 1 } }] });
    await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/x1'), GUARD);
    await waitJobLog(w, 'x2', /refused/);

    // TK13: extra keys; JSON log lines (RUNPOD_ENDPOINT_ID set)
    fake.takeQ.push({ json: { id: 'tk13', input: { prompts: ['a'], max_tokens: 1 }, webhook: null, batchId: 'B1' } });
    await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/tk13'), GUARD);
    // with one slot, x2 run would have posted before tk13 could be taken
    check(fake.of('job-done', 'x2').length === 0, 'CAP', 'a job beyond the concurrency was run');
    covered.push('CAP');
    await waitJobLog(w, 'tk13', /Finished/); // the job's last line
    const lines = logLines(w).filter((l) => l.requestId === 'tk13');
    check(lines.length > 0 && lines.every((l) => l.message.startsWith('[batchId=B1] ')), 'TK13', `log lines: ${JSON.stringify(lines.slice(0, 2))}`);
    covered.push('TK13');
    invariants(fake, 'main');
  } finally {
    await stopWorker(w);
    await fake.stop();
  }
}

// RS14 (stream 503 twice), RS15 (job-done 500 x3), RS16 (404 once), each on its own worker.
async function scenarioRetries() {
  const run = async (id, input, answer, check2) => {
    const fake = await new FakeRunPod().start();
    fake.postAnswer = answer;
    const w = startWorker(fake);
    try {
      fake.takeQ.push(jobTake(id, input));
      await check2(fake, w);
      invariants(fake, id);
    } finally { await stopWorker(w); await fake.stop(); }
  };
  const streamInput = { prompt: 'hi', stream: true, sampling_params: { max_tokens: 5, temperature: 0, ignore_eos: true } };
  let nStream = 0;
  const p14 = run('rs14', streamInput, (r) => (r.kind === 'job-stream' && ++nStream <= 2 ? { status: 503 } : { status: 200 }), async (fake) => {
    await fake.waitFor((r) => r.kind === 'job-done', GUARD);
    const s = fake.of('job-stream', 'rs14');
    check(s.length === 5, 'RS14', `${s.length} stream posts`);
    if (s.length === 5) {
      check(s[0].body === s[1].body && s[1].body === s[2].body, 'RS14', 'retried chunk differs');
      // not before the 2 s and 3 s waits (their exact values: test_runpod_rules.c)
      const g1 = s[1].t - s[0].t, g2 = s[2].t - s[1].t;
      check(g1 >= 1900 && g2 >= 2900, 'RS14', `gaps ${g1} ${g2}`);
      check(body(s[3]).output.choices[0].tokens.length === 3 && body(s[4]).output.choices[0].tokens.length === 1, 'RS14', 'later chunks out of order');
      const done = fake.of('job-done', 'rs14')[0];
      check(done.t >= s[4].t, 'RS14', 'final before the last chunk');
    }
    covered.push('RS14');
  });
  const p15 = run('rs15', { prompts: ['a'], max_tokens: 2 }, (r) => (r.kind === 'job-done' && r.path.endsWith('/rs15') ? { status: 500 } : { status: 200 }), async (fake, w) => {
    // the worker logs the job id once it gives up: no attempt can follow that line
    await waitJobLog(w, 'rs15', /could not be posted/);
    const d = fake.of('job-done', 'rs15');
    check(d.length === 3, 'RS15', `${d.length} attempts`);
    if (d.length === 3) {
      const g1 = d[1].t - d[0].t, g2 = d[2].t - d[1].t;
      check(g1 >= 1900 && g2 >= 2900, 'RS15', `gaps ${g1} ${g2}`);
    }
    // keeps taking jobs
    fake.takeQ.push(jobTake('rs15b', { prompts: ['a'], max_tokens: 1 }));
    await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/rs15b'), GUARD);
    check(fake.of('job-done', 'rs15').length === 3, 'RS15', 'an attempt after giving up');
    covered.push('RS15');
  });
  const p16 = run('rs16', { prompts: ['a'], max_tokens: 2 }, (r) => (r.kind === 'job-done' ? { status: 404 } : { status: 200 }), async (fake, w) => {
    await waitJobLog(w, 'rs16', /could not be posted/);
    check(fake.of('job-done', 'rs16').length === 1, 'RS16', `${fake.of('job-done', 'rs16').length} attempts`);
    covered.push('RS16');
  });
  await Promise.all([p14, p15, p16]);
}

// TK6 (429 back-off), ST4 (stop 429), TK8 (500), and a server that disappears and comes back.
async function scenarioBackoff() {
  const fake = await new FakeRunPod().start();
  fake.takeQ.push({ status: 429 });
  fake.stopQ.push({ status: 429 });
  const w = startWorker(fake);
  try {
    const t429 = await fake.waitFor((r) => r.kind === 'job-take');
    const s429 = await fake.waitFor((r) => r.kind === 'job-stop');
    const tNext = await fake.waitFor((r) => r.kind === 'job-take' && r !== t429, GUARD);
    const sNext = await fake.waitFor((r) => r.kind === 'job-stop' && r !== s429, GUARD);
    check(tNext.t - t429.t >= 5000, 'TK6', `take after 429: ${tNext.t - t429.t} ms`);
    check(sNext.t - s429.t >= 5000, 'ST4', `stop poll after 429: ${sNext.t - s429.t} ms`);
    covered.push('TK6', 'ST4');
    fake.takeQ.push({ status: 500 });
    const n0 = fake.reqs.length;
    const t500 = await fake.waitFor((r) => r.kind === 'job-take', GUARD, n0);
    const after = await fake.waitFor((r) => r.kind === 'job-take' && r !== t500, GUARD, n0);
    // polling goes on, not before 1 s (no hot loop; the wait itself: test_runpod_rules.c)
    check(after.t - t500.t >= 950 && w.exitCode === null, 'TK8', `next take after a 500: ${after.t - t500.t} ms`);
    covered.push('TK8');
    // the job server disappears for 2 s and comes back on the same port
    await fake.restart(2000);
    check(w.exitCode === null, 'DOWN', 'worker exited while the server was down');
    fake.takeQ.push(jobTake('back', { prompts: ['a'], max_tokens: 1 }));
    const d = await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/back'), GUARD);
    check(body(d).output.results.length === 1, 'DOWN', d.body);
    covered.push('DOWN');
    invariants(fake, 'backoff');
  } finally { await stopWorker(w); await fake.stop(); }
}

// TK2-TK4, HB2 with MAX_CONCURRENCY=4; the fake holds every stream post unanswered until
// the test releases them, so jobs a, b and c stay in flight as long as the checks need.
async function scenarioConcurrency() {
  const fake = await new FakeRunPod().start();
  let release;
  const gate = new Promise((r) => { release = r; });
  fake.postAnswer = (r) => (r.kind === 'job-stream' ? { status: 200, until: gate } : { status: 200 });
  const slow = { prompt: 'hi', stream: true, max_batch_size: 1, sampling_params: { max_tokens: 12, temperature: 0, ignore_eos: true } };
  const w = startWorker(fake, { MAX_CONCURRENCY: '4' });
  try {
    const first = await fake.waitFor((r) => r.kind.startsWith('job-take'));
    check(first.path === '/v2/ep/job-take-batch/w1' && first.rawQuery === 'gpu=SIM&batch_size=4&job_in_progress=0', 'TK2', `${first.path}?${first.rawQuery}`);
    covered.push('TK2');
    fake.takeQ.push({ json: [{ id: 'a', input: slow }, { id: 'b', input: slow }] });
    const n0 = fake.reqs.length;
    const got = await fake.waitFor((r) => r.kind.startsWith('job-take') && r.answer && r.answer.json, GUARD, n0);
    const t3 = await fake.waitFor((r) => r.kind.startsWith('job-take'), GUARD, fake.reqs.indexOf(got) + 1);
    check(t3.path === '/v2/ep/job-take-batch/w1' && t3.query.batch_size === '2' && t3.query.job_in_progress === '1', 'TK3', `${t3.path}?${t3.rawQuery}`);
    covered.push('TK3');
    // a ping may fall between the two registrations; the next one lists both
    const ping = await fake.waitFor((r) => r.kind === 'ping' && r.query.job_id && r.query.job_id.split(',').length >= 2, GUARD, n0);
    check(ping.query.job_id.split(',').sort().join(',') === 'a,b' && ping.rawQuery.includes('%2C'), 'HB2', ping.rawQuery);
    covered.push('HB2');
    fake.takeQ.push({ json: [{ id: 'c', input: slow }] });
    const n1 = fake.reqs.length;
    const t4 = await fake.waitFor((r) => r.kind.startsWith('job-take') && r.query.job_in_progress === '1' && r.path === '/v2/ep/job-take/w1', GUARD, n1);
    check(!!t4, 'TK4', 'no single take with 3 held');
    check(fake.of('job-done').length === 0, 'TK4', 'a held job finished while its posts were held');
    covered.push('TK4');
    release();
    for (const id of ['a', 'b', 'c']) await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/' + id), GUARD);
    for (const id of ['a', 'b', 'c']) {
      const toks = fake.of('job-stream', id).flatMap((c) => body(c).output.choices[0].tokens).join('');
      check(toks === T('hi', 12).text, 'CONC', `job ${id} text ${JSON.stringify(toks)}`);
    }
    invariants(fake, 'concurrency');
  } finally { release(); await stopWorker(w); await fake.stop(); }
}

// ST2, ST3, TK5: stop a long streaming job (concurrency 1). The fake answers each of its
// stream posts 150 ms late, so its 1900 chunks cannot end before the test stops it.
// "The worker has acted on a stop list" is marked by its next stop poll: it polls again
// at once after a non-empty list, only once it has stopped the listed jobs.
async function scenarioStop() {
  const fake = await new FakeRunPod().start();
  fake.postAnswer = (r) => (r.kind === 'job-stream' ? { status: 200, delay: 150 } : { status: 200 });
  const w = startWorker(fake);
  const stopPollAfter = (list) => fake.waitFor((r) => r.kind === 'job-stop' && r.answer && r.answer.json && r.answer.json.jobsToStop[0] === list, GUARD)
    .then((given) => fake.waitFor((r) => r.kind === 'job-stop' && r.t >= given.t && r !== given, GUARD, fake.reqs.indexOf(given) + 1));
  try {
    fake.takeQ.push(jobTake('J', { prompt: 'hi', stream: true, max_batch_size: 1, sampling_params: { max_tokens: 1900, temperature: 0, ignore_eos: true } }));
    await fake.waitFor((r) => r.kind === 'job-stream' && r.path.endsWith('/J'), GUARD);
    const accepted = fake.reqs.filter((r) => r.kind.startsWith('job-take')).length;
    // ST3: after the worker acted on ["zzz"], J goes on posting chunks
    fake.stopQ.push({ json: { jobsToStop: ['zzz'] } });
    const acted = await stopPollAfter('zzz');
    const i0 = fake.reqs.indexOf(acted);
    await until(() => fake.reqs.slice(i0).filter((r) => r.kind === 'job-stream' && r.path.endsWith('/J')).length >= 2, 'J posting after the zzz stop');
    covered.push('ST3');
    check(fake.reqs.filter((r) => r.kind.startsWith('job-take')).length === accepted, 'TK5', 'take while the only slot is held');
    covered.push('TK5');
    // ST2: after the worker acted on ["J"], at most the chunk post already in flight arrives;
    // no job-done; the slot is reused; J leaves the ping list
    fake.stopQ.push({ json: { jobsToStop: ['J'] } });
    const stopped = await stopPollAfter('J');
    const i1 = fake.reqs.indexOf(stopped);
    const reuse = await fake.waitFor((r) => r.kind.startsWith('job-take') && r.query.job_in_progress === '0', GUARD, i1);
    const late = fake.reqs.slice(i1).filter((r) => r.kind === 'job-stream' && r.path.endsWith('/J'));
    check(late.length <= 1, 'ST2', `${late.length} stream posts after the worker acted on the stop`);
    check(fake.of('job-done', 'J').length === 0, 'ST2', 'job-done for a stopped job');
    // a ping computed before the job left may arrive after the take; the one after it cannot
    const p1 = await fake.waitFor((r) => r.kind === 'ping', GUARD, fake.reqs.indexOf(reuse) + 1);
    const p2 = await fake.waitFor((r) => r.kind === 'ping', GUARD, fake.reqs.indexOf(p1) + 1);
    check(!('job_id' in p2.query), 'ST2', `ping still lists ${p2.query.job_id}`);
    covered.push('ST2');
    invariants(fake, 'stop');
  } finally { await stopWorker(w); await fake.stop(); }
}

// HB1: the first ping goes out at once when the worker is up (with a one-hour period, a
// worker that waited a period first would hit the hang guard), then one per period, never
// ahead of the schedule; HB4: a ping answered 500 is retried at once (again with a
// one-hour period nothing else can explain a second ping); HB3: pings go on while the
// engine decodes at full load (long jobs, stopped through the stop channel at the end).
async function scenarioHeartbeat() {
  const fake = await new FakeRunPod().start();
  fake.pingAnswer = () => (fake.of('ping').length === 1 ? { status: 500 } : { status: 200 });
  const w = startWorker(fake, { PL_RUNPOD_PING_MS: '3600000' });
  try {
    const p1 = await fake.waitFor((r) => r.kind === 'ping', GUARD);
    check(p1.path === '/v2/ep/ping/w1' && p1.query.gpu === 'SIM' && p1.query.runpod_version === '1.12.0' && !('job_id' in p1.query), 'HB1', `ping ${p1.path}?${p1.rawQuery}`);
    covered.push('HB1');
    const p2 = await fake.waitFor((r) => r.kind === 'ping' && r !== p1, GUARD);
    check(p2.rawQuery === p1.rawQuery, 'HB4', `retry ${p2.rawQuery}`);
    const d = await runJob(fake, 'hb4', { prompts: ['a'], max_tokens: 2, temperature: 0, sampling_params: { ignore_eos: true } });
    check(body(d).output.results[0].text === T('a', 2).text, 'HB4', `engine affected: ${d.body}`);
    covered.push('HB4');
  } finally { await stopWorker(w); await fake.stop(); }

  const fake2 = await new FakeRunPod().start();
  const t0 = Date.now();
  const w2 = startWorker(fake2, { MAX_CONCURRENCY: '4' });
  try {
    await until(() => fake2.of('ping').length >= 3, 'three idle pings');
    for (const p of fake2.of('ping')) check(p.path === '/v2/ep/ping/w1' && p.query.gpu === 'SIM' && p.query.runpod_version === '1.12.0' && !('job_id' in p.query), 'HB1', `ping ${p.path}?${p.rawQuery}`);
    // full load: 4 slots, 8 sequences each, far more tokens than the test needs
    const big = { prompts: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], max_tokens: 2000, temperature: 0, sampling_params: { ignore_eos: true } };
    const ids = ['h1', 'h2', 'h3', 'h4'];
    fake2.takeQ.push({ json: ids.map((id) => ({ id, input: big })) });
    await until(() => fake2.of('ping').filter((p) => p.query.job_id && p.query.job_id.split(',').length === 4).length >= 3 || fake2.of('job-done').length > 0, 'three pings while decoding');
    check(fake2.of('job-done').length === 0, 'HB3', 'the jobs ended before three pings came: the heartbeat was starved');
    covered.push('HB3');
    // never ahead of the schedule: ping k is not sent before k periods after the start
    const pings = fake2.of('ping');
    pings.forEach((p, k) => check(p.t - t0 >= k * 1000 - 50, 'HB1', `ping ${k} at ${p.t - t0} ms`));
    fake2.stopQ.push({ json: { jobsToStop: ids } });
    await fake2.waitFor((r) => r.kind.startsWith('job-take') && r.query.job_in_progress === '0' && r.t > pings[pings.length - 1].t, GUARD);
  } finally { await stopWorker(w2); await fake2.stop(); }
}

// HB5: no API key -> no pings; HB6: model load failure -> unhealthy ping, exit 1.
async function scenarioNoKeyAndBadModel() {
  const fake = await new FakeRunPod().start();
  const w = startWorker(fake, { RUNPOD_AI_API_KEY: undefined });
  try {
    const d = await runJob(fake, 'hb5', { prompts: ['a'], max_tokens: 1 });
    check(!!d && fake.of('ping').length === 0, 'HB5', `${fake.of('ping').length} pings`);
    covered.push('HB5');
    invariants(fake, 'HB5', '');
  } finally { await stopWorker(w); await fake.stop(); }
  const fake2 = await new FakeRunPod().start();
  const env = { ...process.env, ...fake2.env() };
  const p = spawn(PAGELLM, ['worker', '--model', '/nonexistent/model'], { env, stdio: 'ignore' });
  const code = await new Promise((r) => p.on('exit', r));
  // the worker waits for the ping's answer before it exits, and the fake records a
  // request before it answers: the ping is on record by now
  const pings = fake2.of('ping');
  check(code === 1 && pings.length === 1 && pings[0].query.status === 'unhealthy' && pings[0].query.check && pings[0].query.reason && pings[0].query.reason.length <= 256 && fake2.of('job-take').length === 0, 'HB6', `exit ${code}, pings ${pings.map((x) => x.rawQuery)}`);
  covered.push('HB6');
  await fake2.stop();
}

// SD1: SIGTERM while a job streams; SD2: RP_REFRESH_WORKER=1; TK12: an unanswered take.
async function scenarioShutdown() {
  const fake = await new FakeRunPod().start();
  fake.postAnswer = (r) => (r.kind === 'job-stream' ? { status: 200, delay: 100 } : { status: 200 });
  const w = startWorker(fake);
  fake.takeQ.push(jobTake('sd1', { prompt: 'hi', stream: true, max_batch_size: 1, sampling_params: { max_tokens: 20, temperature: 0, ignore_eos: true } }));
  // a worker that never streams must not outlive the scenario
  await fake.waitFor((r) => r.kind === 'job-stream', GUARD).catch(async (e) => { await stopWorker(w); await fake.stop(); throw e; });
  const n0 = fake.reqs.length;
  w.kill('SIGTERM');
  const code = await w.exited;
  // one take is outstanding at a time: the one sent before the signal may still arrive
  // after it, no other may
  const takesAfter = fake.reqs.slice(n0).filter((r) => r.kind.startsWith('job-take'));
  const chunks = fake.of('job-stream', 'sd1');
  const done = fake.of('job-done', 'sd1');
  check(code === 0 && takesAfter.length <= 1 && chunks.length === 20 && done.length === 1 && body(done[0]).output.length === 20, 'SD1', `exit ${code}, takes after ${takesAfter.length}, chunks ${chunks.length}, done ${done.length}`);
  covered.push('SD1');
  await fake.stop();

  const fake2 = await new FakeRunPod().start();
  const w2 = startWorker(fake2, { RP_REFRESH_WORKER: '1' });
  fake2.takeQ.push(jobTake('sd2', { prompts: ['a'], max_tokens: 2 }));
  const code2 = await Promise.race([w2.exited, sleep(GUARD).then(() => 'timeout')]);
  const d2 = fake2.of('job-done', 'sd2');
  const lastTake = fake2.reqs.filter((r) => r.kind.startsWith('job-take')).pop();
  check(code2 === 0 && d2.length === 1 && body(d2[0]).stopPod === true && lastTake.t <= d2[0].t, 'SD2', `exit ${code2}, ${d2.map((x) => x.body)}`);
  covered.push('SD2');
  await stopWorker(w2);
  await fake2.stop();

  const fake3 = await new FakeRunPod().start();
  fake3.takeQ.push({ never: true });
  const w3 = startWorker(fake3, { PL_RUNPOD_TAKE_TIMEOUT_MS: '1500' });
  try {
    const t1 = await fake3.waitFor((r) => r.kind === 'job-take');
    const t2 = await fake3.waitFor((r) => r.kind === 'job-take' && r !== t1, GUARD);
    check(t2.t - t1.t >= 1400, 'TK12', `new take ${t2.t - t1.t} ms later`); // abandoned, not before 1.5 s
    covered.push('TK12');
  } finally { await stopWorker(w3); await fake3.stop(); }
}

// ------------------------------------------------------- OpenAI-route parity
// The worker's OpenAI-route jobs go through the server's request handling, so the
// reference for each answer is `pagellm serve` on the same model and served name,
// given the same body (greedy): response objects, SSE events and error objects must
// be equal but for the per-request id and created time.

function startServer(args = []) {
  return new Promise((resolve, reject) => {
    const p = spawn(PAGELLM, ['serve', '--model', MODEL, '--port', '0', '--threads', '1', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => {
      err += d;
      const m = / on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (m && !p.port) { p.port = Number(m[1]); resolve(p); }
    });
    p.exited = new Promise((r) => p.on('exit', (code) => { reject(new Error(`serve exited ${code}: ${err}`)); r(code); }));
  });
}

// Drops what differs between any two answers to one body: the request id and the clock.
function strip(o) {
  if (Array.isArray(o)) return o.map(strip);
  if (o && typeof o === 'object') {
    const c = {};
    // ids and times differ between any two answers (Responses items too)
    for (const [k, v] of Object.entries(o)) if (!['id', 'created', 'created_at', 'item_id'].includes(k)) c[k] = strip(v);
    return c;
  }
  return o;
}
// An SSE body as its events: parsed (stripped) JSON, or the literal [DONE].
function sseEvents(text) {
  return text.split('\n\n').filter((e) => e.length).map((e) => {
    // the Responses stream names each event: "event: <type>\ndata: <json>"
    const named = /^event: ([^\n]*)\n(data: .*)$/s.exec(e);
    const ev = named ? named[2] : e;
    if (!ev.startsWith('data: ')) return `not an event: ${e}`;
    const d = ev.slice(6);
    const j = d === '[DONE]' ? d : strip(JSON.parse(d));
    return named ? [named[1], j] : j;
  });
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function scenarioOpenAIParity() {
  // auto tool choice on both: the server's flags, worker-vllm's variables
  const srv = await startServer(['--enable-auto-tool-choice', '--tool-call-parser', 'hermes']);
  const fake = await new FakeRunPod().start();
  const w = startWorker(fake, { MAX_CONCURRENCY: '4', ENABLE_AUTO_TOOL_CHOICE: 'true', TOOL_CALL_PARSER: 'hermes' });
  const chat = '/v1/chat/completions', cmpl = '/v1/completions';
  const msgs = [{ role: 'user', content: 'hi' }];
  const greedy = { model: MODEL, temperature: 0, ignore_eos: true };
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 10 } }, required: ['city'], additionalProperties: false } } },
    { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'integer' } }, required: ['tz'] } } }];
  try {
    // OP1-OP3 answers, OP4-OP9 validation errors (tools, response_format, sampling, types, model);
    // OP7 unknown fields (ignored); OP10-OP14 embeddings and responses through the same layer
    const cases = [
      ['OP1', chat, { ...greedy, messages: msgs, max_tokens: 5, logprobs: true, top_logprobs: 2 }],
      ['OP1N', chat, { ...greedy, messages: msgs, max_tokens: 5, temperature: 0.8, seed: 7, n: 2 }],
      ['OP2', cmpl, { ...greedy, prompt: ['a', 'b'], max_tokens: 3, logprobs: 2, echo: true }],
      ['OP3', chat, { ...greedy, messages: msgs, max_tokens: 3, tools: [], tool_choice: 'none', response_format: { type: 'text' } }],
      ['OP4', chat, { ...greedy, messages: msgs, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }], tool_choice: { type: 'function', function: { name: 'g' } } }],
      ['OP5', chat, { ...greedy, messages: msgs, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { not: {} } } } }],
      ['OP6', cmpl, { model: MODEL, prompt: 'hi', temperature: -1 }],
      ['OP7', cmpl, { ...greedy, prompt: 'hi', max_tokens: 3, bogus: 1, store: false, metadata: { a: 'b' } }],
      ['OP8', chat, { model: MODEL, messages: 'hi' }],
      ['OP9', cmpl, { model: MODEL, prompt: 'hi', max_tokens: 100000 }],
      ['OP10', '/v1/embeddings', { model: MODEL, input: ['a', 'bc'], encoding_format: 'float' }],
      ['OP11', '/v1/embeddings', { model: MODEL, input: 'hello', encoding_format: 'base64' }],
      ['OP12', '/v1/embeddings', { model: MODEL, input: 'hello', dimensions: 8 }],
      ['OP13', '/v1/responses', { model: MODEL, input: 'hi', instructions: 'be brief', max_output_tokens: 5, temperature: 0 }],
      ['OP14', '/v1/responses', { model: MODEL, input: 'hi', previous_response_id: 'resp_1' }],
      ['OP15', chat, { model: MODEL, temperature: 0, messages: msgs, max_tokens: 200, response_format: { type: 'json_schema', json_schema: { name: 'x', strict: true, schema: { type: 'object', properties: { a: { type: 'array', items: { type: 'boolean' }, maxItems: 3 }, b: { type: ['null', 'integer'] } }, required: ['a', 'b'], additionalProperties: false } } } }],
      // OT1: tool calling (tool_choice required: grammar-constrained calls, message.tool_calls)
      ['OT1', chat, { model: MODEL, temperature: 0, messages: msgs, tools, tool_choice: 'required', max_tokens: 60 }],
      // OT3: auto (ENABLE_AUTO_TOOL_CHOICE / TOOL_CALL_PARSER on the worker): a Hermes call forced by guided_choice
      ['OT3', chat, { model: MODEL, temperature: 0, messages: msgs, tools, max_tokens: 300, guided_choice: ['<tool_call>\n{"name": "get_time", "arguments": {"tz": 2}}\n</tool_call>'] }],
    ];
    for (const [id, route, input] of cases) {
      const ref = await request(srv.port, 'POST', route, input);
      const d = await runJob(fake, id.toLowerCase(), { openai_route: route, openai_input: input });
      const b = body(d);
      const chunks = fake.of('job-stream', id.toLowerCase());
      if (['OP1', 'OP1N', 'OP2', 'OP3', 'OP7', 'OP10', 'OP11', 'OP13', 'OP15', 'OT1', 'OT3'].includes(id)) check(ref.status === 200, id, `server ${ref.body}`);
      if (['OP4', 'OP12', 'OP14'].includes(id)) check(ref.status === 400, id, `server ${ref.body}`);
      if (['OT1', 'OT3'].includes(id)) check(ref.json.choices[0].message.tool_calls?.length >= 1, id, `no tool calls: ${ref.body}`);
      if (ref.status === 200) {
        check(Array.isArray(b.output) && b.output.length === 1 && same(strip(b.output[0]), strip(ref.json)) && chunks.length === 1,
          id, `worker ${d.body}\n  server ${ref.body}`);
      } else {
        let e = null;
        try { e = JSON.parse(b.error); } catch { /* not JSON */ }
        check(d.query.isStream === 'true' && chunks.length === 0 && same(e, ref.json.error), id, `worker ${d.body}\n  server ${ref.status} ${ref.body}`);
      }
      covered.push(id);
    }
    // OS1, OS2: streams; the concatenated chunk strings are the server's SSE body
    const streams = [
      ['OS1', chat, { ...greedy, messages: msgs, max_tokens: 6, stream: true, temperature: 0.8, seed: 7, n: 2, logprobs: true, top_logprobs: 1, stream_options: { include_usage: true } }],
      ['OS2', cmpl, { ...greedy, prompt: 'hi', max_tokens: 5, stream: true, logprobs: 1 }],
      ['OS3', '/v1/responses', { model: MODEL, input: 'hi', max_output_tokens: 6, temperature: 0, stream: true }],
      // OT2: a named tool_choice streamed: tool_calls deltas (ids stripped: each answer has its own)
      ['OT2', chat, { model: MODEL, temperature: 0, messages: msgs, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 40, stream: true }],
    ];
    for (const [id, route, input] of streams) {
      const ref = await request(srv.port, 'POST', route, input);
      const d = await runJob(fake, id.toLowerCase(), { openai_route: route, openai_input: input });
      const chunks = fake.of('job-stream', id.toLowerCase()).map((c) => body(c).output);
      const mine = sseEvents(chunks.join('')), theirs = sseEvents(ref.body);
      check(ref.status === 200 && theirs.length > 3 && same(mine, theirs) && same(body(d).output, chunks), id,
        `worker ${JSON.stringify(mine)}\n  server ${JSON.stringify(theirs)}`);
      covered.push(id);
    }
    // OM1, OM2: /v1/models/{id} (a served name; an unknown one is the server's 404 error)
    for (const [id, name] of [['OM1', MODEL], ['OM2', 'no-such-model']]) {
      const ref = await request(srv.port, 'GET', `/v1/models/${encodeURIComponent(name)}`);
      const d = await runJob(fake, id.toLowerCase(), { openai_route: `/v1/models/${name}` });
      const b = body(d);
      if (id === 'OM1') {
        check(ref.status === 200 && ref.json.id === MODEL && Array.isArray(b.output) && same(strip(b.output[0]), strip(ref.json)), id, `worker ${d.body}\n  server ${ref.body}`);
      } else {
        let e = null;
        try { e = JSON.parse(b.error); } catch { /* not JSON */ }
        check(ref.status === 404 && same(e, ref.json.error), id, `worker ${d.body}\n  server ${ref.status} ${ref.body}`);
      }
      covered.push(id);
    }
    // OC: several OpenAI-route jobs in flight at once (batch take), each equal to the server's answer
    const refC = await request(srv.port, 'POST', chat, { ...greedy, messages: msgs, max_tokens: 8 });
    const refS = await request(srv.port, 'POST', cmpl, { ...greedy, prompt: 'b', max_tokens: 8, stream: true });
    fake.takeQ.push({ json: [
      { id: 'oc1', input: { openai_route: chat, openai_input: { ...greedy, messages: msgs, max_tokens: 8 } } },
      { id: 'oc2', input: { openai_route: cmpl, openai_input: { ...greedy, prompt: 'b', max_tokens: 8, stream: true } } },
      { id: 'oc3', input: { openai_route: chat, openai_input: { ...greedy, messages: msgs, max_tokens: 8 } } },
      { id: 'oc4', input: { prompt: 'hi', stream: true, max_batch_size: 1, sampling_params: { max_tokens: 12, temperature: 0, ignore_eos: true } } }] });
    for (const id of ['oc1', 'oc2', 'oc3', 'oc4']) await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/' + id), GUARD);
    for (const id of ['oc1', 'oc3']) check(same(strip(body(fake.of('job-done', id)[0]).output[0]), strip(refC.json)), 'OC', `${id}: ${fake.of('job-done', id)[0].body}`);
    check(same(sseEvents(fake.of('job-stream', 'oc2').map((c) => body(c).output).join('')), sseEvents(refS.body)), 'OC', 'oc2 stream differs');
    check(fake.of('job-stream', 'oc4').flatMap((c) => body(c).output.choices[0].tokens).join('') === T('hi', 12).text, 'OC', 'oc4 text');
    covered.push('OC');
    invariants(fake, 'openai-parity');
  } finally {
    await stopWorker(w);
    await fake.stop();
    srv.kill('SIGKILL');
    await srv.exited.catch(() => {});
  }
}

// LV1-LV3: engine liveness (test hook PAGELLM_TEST_STALL_FILE stalls the engine loop):
// no heartbeat while work is pending and the loop does not step, pings again after;
// the local API's /health is 503 meanwhile, as the server's /health is.
async function scenarioLiveness() {
  const stall = path.join(os.tmpdir(), `pl-rp-stall-${process.pid}`);
  fs.writeFileSync(stall, '');
  const fake = await new FakeRunPod().start();
  const w = startWorker(fake, { PAGELLM_TEST_STALL_FILE: stall }, ['--health-stall-timeout', '0.5']);
  try {
    await fake.waitFor((r) => r.kind === 'ping', GUARD); // idle: healthy
    fake.takeQ.push(jobTake('lv', { prompts: ['a'], max_tokens: 2, temperature: 0, sampling_params: { ignore_eos: true } }));
    await fake.waitFor((r) => r.kind.startsWith('job-take') && r.answer && r.answer.json, GUARD);
    // the heartbeat logs the pause in the turn it sends no ping; from then on, over a
    // window of three periods, no ping may come (a ping on record was answered before)
    await until(() => logLines(w).some((l) => /heartbeat paused/.test(l.message)), 'the heartbeat pause');
    const paused = fake.reqs.length;
    await sleep(3000);
    const during = fake.reqs.slice(paused).filter((r) => r.kind === 'ping');
    check(during.length === 0 && fake.of('job-done', 'lv').length === 0, 'LV1', `${during.length} pings while the engine loop was stalled`);
    const freed = fake.reqs.length;
    fs.unlinkSync(stall);
    const d = await fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/lv'), GUARD);
    await fake.waitFor((r) => r.kind === 'ping', GUARD, freed); // pings again
    check(body(d).output.results[0].text === T('a', 2).text, 'LV2', d.body);
    covered.push('LV1', 'LV2');
  } finally {
    await stopWorker(w);
    await fake.stop();
    fs.rmSync(stall, { force: true });
  }
  fs.writeFileSync(stall, '');
  const w2 = startWorker(null, { PAGELLM_TEST_STALL_FILE: stall }, ['--rp_serve_api', '--rp_api_port', '0', '--health-stall-timeout', '0.5']);
  try {
    const port = await apiPort(w2);
    let h = await request(port, 'GET', '/health');
    check(h.status === 200, 'LV3', `idle /health ${h.status}`);
    const pending = request(port, 'POST', '/runsync', { input: { prompts: ['a'], max_tokens: 2, temperature: 0, sampling_params: { ignore_eos: true } } });
    h = await until(async () => { const x = await request(port, 'GET', '/health'); return x.status === 503 && x; }, '/health 503 while stalled');
    check(h.json && h.json.jobs.inProgress === 1, 'LV3', `stalled /health ${h.status} ${h.body}`);
    fs.unlinkSync(stall);
    const r = await pending;
    h = await request(port, 'GET', '/health');
    check(r.json.status === 'COMPLETED' && h.status === 200, 'LV3', `${r.body} then /health ${h.status}`);
    covered.push('LV3');
  } finally {
    await stopWorker(w2);
    fs.rmSync(stall, { force: true });
  }
}

// ------------------------------------------------------------ local API

function request(port, method, p, data) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: { 'Content-Type': 'application/json' } }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => { let j = null; try { j = JSON.parse(b); } catch { /* not JSON */ } resolve({ status: res.statusCode, headers: res.headers, body: b, json: j }); });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(typeof data === 'string' ? data : JSON.stringify(data));
    req.end();
  });
}

async function scenarioLocalApi() {
  const hookHits = [];
  const hook = http.createServer((req, res) => { let b = ''; req.on('data', (d) => { b += d; }); req.on('end', () => { hookHits.push(b); res.end('ok'); }); });
  await new Promise((r) => hook.listen(0, '127.0.0.1', r));
  const fake = await new FakeRunPod().start(); // LR7: GET_JOB set, yet no takes
  const w = startWorker(fake, {}, ['--rp_serve_api', '--rp_api_port', '0']);
  try {
    const port = await apiPort(w); // the port the OS chose, from the start line
    const ta = T('a', 3);
    const inA = { prompts: ['a'], max_tokens: 3, temperature: 0, sampling_params: { ignore_eos: true } };
    let r = await request(port, 'POST', '/run', { input: inA });
    const id = r.json && r.json.id;
    check(r.status === 200 && /^test-[0-9a-f-]{36}$/.test(id) && JSON.stringify(r.json) === JSON.stringify({ id, status: 'IN_PROGRESS' }), 'LA1', r.body);
    r = await request(port, 'GET', '/health');
    check(r.json.jobs.inQueue === 1 && r.json.jobs.retried === 0 && r.json.workers.idle === 1, 'LA15', r.body);
    // spec 3.6: with RUNPOD_AI_API_KEY and RUNPOD_POD_ID set the local API pings, listing stashed jobs
    const hb = await fake.waitFor((x) => x.kind === 'ping' && x.query.job_id === id, GUARD).catch(() => null);
    check(hb && hb.query.runpod_version === '1.12.0', 'LA-HB', 'no ping listing the stashed job');
    r = await request(port, 'POST', `/status/${id}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id, status: 'COMPLETED', output: { results: [{ prompt: 'a', text: ta.text }] } }), 'LA2', r.body);
    r = await request(port, 'POST', `/status/${id}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id, status: 'FAILED', error: 'Job ID not found' }), 'LA3', r.body);
    const inS = { prompt: 'hi', stream: true, sampling_params: { max_tokens: 5, temperature: 0, ignore_eos: true } };
    r = await request(port, 'POST', '/runsync', { input: inS });
    check(r.json.status === 'COMPLETED' && r.json.output.length === 3 && r.json.output.flatMap((c) => c.choices[0].tokens).join('') === T('hi', 5).text, 'LA4', r.body);
    const la4 = r.json.output;
    r = await request(port, 'POST', '/run', { input: inS });
    const sid = r.json.id;
    r = await request(port, 'POST', `/stream/${sid}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id: sid, status: 'COMPLETED', stream: la4.map((c) => ({ output: c })) }), 'LA5', r.body);
    r = await request(port, 'POST', '/run', { input: inA });
    const bid = r.json.id;
    r = await request(port, 'POST', `/stream/${bid}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id: bid, status: 'FAILED', error: 'Stream not supported, handler must be a generator.' }), 'LA6', r.body);
    r = await request(port, 'POST', `/status/${bid}`);
    check(r.json.status === 'COMPLETED', 'LA6', r.body);
    r = await request(port, 'POST', '/stream/unknown');
    check(JSON.stringify(r.json) === JSON.stringify({ id: 'unknown', status: 'FAILED', error: 'Job ID not found' }), 'LA7', r.body);
    r = await request(port, 'POST', '/runsync', { input: {} });
    check(r.json.status === 'FAILED' && r.json.error === "Missing 'prompts' in input" && /^test-/.test(r.json.id), 'LA8', r.body);
    for (const bad of [{}, { input: 'x' }, 'not json']) {
      r = await request(port, 'POST', '/runsync', bad);
      check(r.status === 422 && Array.isArray(r.json && r.json.detail), 'LA9', `${r.status} ${r.body}`);
    }
    r = await request(port, 'POST', '/run', { input: inA });
    r = await request(port, 'GET', `/status/${r.json.id}`);
    check(r.json.status === 'COMPLETED', 'LA10', r.body);
    r = await request(port, 'PUT', '/runsync', { input: inA });
    check(r.status === 405 && r.body === '{"detail":"Method Not Allowed"}', 'LA10', r.body);
    r = await request(port, 'GET', '/nope');
    check(r.status === 404 && r.body === '{"detail":"Not Found"}', 'LA10', r.body);
    r = await request(port, 'POST', '/runsync', { input: inA, webhook: `http://127.0.0.1:${hook.address().port}/hook` });
    await until(() => hookHits.length > 0, 'the webhook POST').catch(() => null);
    check(r.json.status === 'COMPLETED' && hookHits.length === 1 && JSON.stringify(JSON.parse(hookHits[0])) === JSON.stringify({ output: r.json.output }), 'LA11', hookHits.join('|'));
    r = await request(port, 'GET', '/docs');
    check(r.status >= 300 && r.status < 400 && r.headers.location === '/', 'LA12', `${r.status}`);
    const many = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((p) => request(port, 'POST', '/runsync', { input: { ...inA, prompts: [p] } })));
    for (const [i, m] of many.entries()) {
      const p = 'abcdefgh'[i];
      check(m.json.status === 'COMPLETED' && m.json.output.results[0].text === T(p, 3).text, 'LA13', m.body);
    }
    r = await request(port, 'POST', '/run', { input: inA });
    const cid = r.json.id;
    r = await request(port, 'POST', `/cancel/${cid}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id: cid, status: 'CANCELLED' }), 'LA14', r.body);
    r = await request(port, 'POST', `/status/${cid}`);
    check(r.json.error === 'Job ID not found', 'LA14', r.body);
    // LA16 (ext): /cancel of a running job (an OpenAI-route stream with the rest of the
    // context to go): the blocked /status answers CANCELLED at once, the slot is free again
    r = await request(port, 'POST', '/run', { input: { openai_route: '/v1/chat/completions', openai_input: { model: MODEL, messages: [{ role: 'user', content: 'hi' }], ignore_eos: true, stream: true } } });
    const rid = r.json.id;
    const blocked = request(port, 'POST', `/status/${rid}`);
    await until(async () => (await request(port, 'GET', '/health')).json.jobs.inProgress === 1, 'the job running');
    r = await request(port, 'POST', `/cancel/${rid}`);
    check(JSON.stringify(r.json) === JSON.stringify({ id: rid, status: 'CANCELLED' }), 'LA16', r.body);
    // the job would run to the context's end (ignore_eos, no max_tokens): CANCELLED shows the stop
    const st = await blocked;
    check(JSON.stringify(st.json) === JSON.stringify({ id: rid, status: 'CANCELLED' }), 'LA16', st.body);
    r = await request(port, 'GET', '/health');
    check(r.json.jobs.inProgress === 0 && r.json.workers.idle === 1, 'LA16', r.body);
    r = await request(port, 'POST', '/ep/realtime', { id: 'rt1', input: inA });
    check(JSON.stringify(r.json) === JSON.stringify({ output: { results: [{ prompt: 'a', text: ta.text }] } }), 'RT', r.body);
    check(fake.reqs.filter((x) => x.kind.startsWith('job-take')).length === 0, 'LR7', 'takes while serving the local API');
    covered.push('LA1', 'LA2', 'LA3', 'LA4', 'LA5', 'LA6', 'LA7', 'LA8', 'LA9', 'LA10', 'LA11', 'LA12', 'LA13', 'LA14', 'LA15', 'LA16', 'LA-HB', 'LR7', 'RT');
  } finally { await stopWorker(w); await fake.stop(); hook.close(); }
}

function oneShot(args, cwd, extraEnv = {}) {
  return new Promise((resolve) => {
    const env = { ...process.env, ...extraEnv };
    delete env.RUNPOD_WEBHOOK_GET_JOB;
    const p = spawn(PAGELLM, ['worker', '--model', MODEL, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

async function scenarioOneShot() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-rp-'));
  try {
    const ta = T('a', 2), tb = T('b', 2);
    const job = (p) => JSON.stringify({ input: { prompts: [p], max_tokens: 2, temperature: 0, sampling_params: { ignore_eos: true } } });
    let r = await oneShot(['--test_input', job('a')], dir);
    check(r.code === 0 && r.out.split('\n').includes(JSON.stringify({ output: { results: [{ prompt: 'a', text: ta.text }] } })), 'LR1', r.out);
    r = await oneShot(['--test_input', '{"input":{}}'], dir);
    check(r.code === 1 && (r.out + r.err).includes("Missing 'prompts' in input"), 'LR2', `exit ${r.code} out ${r.out} err ${r.err}`);
    r = await oneShot(['--test_input', '{"id":"x"}'], dir);
    check(r.code === 1 && (r.out + r.err).includes('Job has no input parameter'), 'LR3', r.err);
    r = await oneShot([], dir);
    check(r.code === 1 && (r.out + r.err).includes('test_input.json not found'), 'LR4', r.err);
    fs.writeFileSync(path.join(dir, 'test_input.json'), job('a'));
    r = await oneShot([], dir);
    check(r.code === 0 && r.out.includes(JSON.stringify(ta.text)), 'LR5', r.out);
    r = await oneShot(['--test_input', job('b')], dir);
    check(r.code === 0 && r.out.includes(JSON.stringify({ prompt: 'b', text: tb.text })), 'LR5', r.out);
    r = await oneShot(['--test_input', '{"input":{"prompt":"hi","stream":true,"sampling_params":{"max_tokens":5,"temperature":0,"ignore_eos":true}}}'], dir);
    const line = r.out.split('\n').find((l) => l.startsWith('{"output"'));
    check(r.code === 0 && line && JSON.parse(line).output.length === 3, 'LR6', r.out);
    covered.push('LR1', 'LR2', 'LR3', 'LR4', 'LR5', 'LR6');
    // OA4: RAW_OPENAI_OUTPUT=0 -> arrays of event objects, no [DONE]
    r = await oneShot(['--test_input', JSON.stringify({ input: { openai_route: '/v1/chat/completions', openai_input: { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, ignore_eos: true, stream: true } } })], dir, { RAW_OPENAI_OUTPUT: '0' });
    const l4 = r.out.split('\n').find((l) => l.startsWith('{"output"'));
    const o4 = l4 && JSON.parse(l4).output;
    check(r.code === 0 && o4 && o4.length >= 2 && o4.every((c) => Array.isArray(c) && c.every((e) => e.object === 'chat.completion.chunk')) && o4[0].length === 1 && !l4.includes('[DONE]'), 'OA4', r.out);
    covered.push('OA4');
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
}

const t0 = Date.now();
// The heartbeat scenario first, then the rest in groups (2 shared cores).
const only = process.env.SCEN ? process.env.SCEN.split(',') : null;
const pick = (fns) => fns.filter((f) => !only || only.includes(f.name));
const runScenario = (f) => als.run(f.name, async () => {
  try { await f(); } catch (e) { check(false, 'scenario', e && e.stack); }
});
// The OpenAI-parity and liveness scenarios (a server beside a worker, stalled loops) come
// last, in a group of their own, so the busiest group does not grow.
for (const group of [[scenarioHeartbeat], [scenarioMain, scenarioRetries, scenarioBackoff, scenarioConcurrency,
  scenarioStop, scenarioNoKeyAndBadModel, scenarioShutdown, scenarioLocalApi, scenarioOneShot],
[scenarioOpenAIParity, scenarioLiveness]])
  await Promise.all(pick(group).map(runScenario));
const failures = [...failedBy.values()].reduce((a, b) => a + b, 0);
console.log(`covered: ${[...new Set(covered)].join(' ')}`);
console.log(`${failures} failure(s) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(failures ? 1 : 0);
