// soak_serve.mjs -- sustained serving on loopback (issue 11, "Reliability figures"): a
// `pagellm serve` process gets ROUNDS rounds of mixed requests, CONCURRENCY at a time:
//   - completions and chat, streaming and not, with random sampling params (valid);
//   - 10% invalid bodies (bad JSON, wrong types, out-of-range values): must get a 4xx;
//   - 20% streams the client drops mid-stream (after the first chunk);
//   - 5% with a logit_bias on an id in the vocab gap (config vocab_size > tokenizer): a 400.
// After each round it waits until /metrics shows nothing running or waiting and the KV
// cache empty, and reads the server's RSS. The figures: crashes (the process died), valid
// requests that did not finish normally (a request hurt by another's fault: any valid,
// undropped request must end with finish_reason stop/length and [DONE]), the metrics
// after each round, and RSS per round (flat = no leak).
// Usage: node bench/soak_serve.mjs PAGELLM MODEL_DIR [TOTAL=10000] [ROUNDS=3]
// Env: SOAK_CONCURRENCY (16). Loopback only; every loop is bounded by the request count.
// The model should be the padded tiny model (pl-mkmodel --preset default-padded: 1024
// embedding rows for 960 token ids), so that the gap exists.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';

const [PAGELLM, MODEL_DIR, TOTAL = '10000', ROUNDS = '3'] = process.argv.slice(2);
if (!PAGELLM || !MODEL_DIR) {
  console.error('usage: node bench/soak_serve.mjs PAGELLM MODEL_DIR [TOTAL] [ROUNDS]');
  process.exit(2);
}
const total = Number(TOTAL), rounds = Number(ROUNDS);
const concurrency = Number(process.env.SOAK_CONCURRENCY ?? 16);
const GAP_ID = 1000; // in [960, 1024): a row of the model, no token of the tokenizer

let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
const pick = (a) => a[Math.floor(rnd() * a.length)];

const server = spawn(PAGELLM, ['serve', '--model', MODEL_DIR, '--served-model-name', 'soak',
  '--port', '0', '--max-model-len', '256', '--max-num-seqs', '32', '--disable-log-stats',
  '--threads', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
let exited = null;
server.on('exit', (code, sig) => { exited = { code, sig }; });
const port = await new Promise((resolve, reject) => {
  let err = '';
  server.stderr.on('data', (d) => {
    err += d;
    const m = /on http:\/\/[^:]+:(\d+)/.exec(err);
    if (m) resolve(Number(m[1]));
  });
  server.on('exit', () => reject(new Error('the server exited at start:\n' + err)));
});

function request(path, body, { drop = false } = {}) {
  return new Promise((resolve) => {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } },
    (res) => {
      let text = '';
      res.on('data', (c) => {
        text += c;
        if (drop && text.includes('data: ')) { req.destroy(); resolve({ status: res.statusCode, dropped: true }); }
      });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', () => resolve({ status: res.statusCode, text, error: true }));
    });
    req.on('error', (e) => resolve({ status: 0, error: String(e) }));
    req.end(data);
  });
}

function get(path) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path }, (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
    }).on('error', () => resolve({ status: 0, text: '' }));
  });
}

function metric(text, name) {
  for (const line of text.split('\n'))
    if (line.startsWith(name)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  return NaN;
}

function rssMiB() {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

// one request of the mix; returns its kind and whether it behaved
async function one() {
  const r = rnd();
  const chat = rnd() < 0.5;
  const path = chat ? '/v1/chat/completions' : '/v1/completions';
  const base = chat ? { model: 'soak', messages: [{ role: 'user', content: pick(['hi', 'tell me', 'a b c']) }] }
    : { model: 'soak', prompt: pick(['hello', 'the', [5, 6, 7], [1, 2]]) };
  const params = { max_tokens: 1 + Math.floor(rnd() * 24), temperature: pick([0, 0.7, 1.5]),
    top_p: pick([1, 0.9]), seed: Math.floor(rnd() * 1000), ignore_eos: rnd() < 0.5 };
  if (r < 0.10) { // invalid
    const bad = pick(['{"model": "soak", "prompt": ', JSON.stringify({ ...base, max_tokens: 'x' }),
      JSON.stringify({ ...base, temperature: 9 }), JSON.stringify({ ...base, n: 0 }), '[]']);
    const res = await request(path, bad);
    return { kind: 'invalid', ok: res.status >= 400 && res.status < 500 };
  }
  if (r < 0.15) { // id-gap logit_bias
    const res = await request(path, { ...base, ...params, logit_bias: { [GAP_ID]: 100 } });
    return { kind: 'gap', ok: res.status === 400 };
  }
  if (r < 0.35) { // dropped mid-stream
    const res = await request(path, { ...base, ...params, max_tokens: 64, ignore_eos: true, stream: true },
      { drop: true });
    return { kind: 'dropped', ok: res.status === 200 };
  }
  const stream = rnd() < 0.5;
  const res = await request(path, { ...base, ...params, stream });
  if (res.status !== 200) return { kind: 'valid', ok: false, why: `status ${res.status}: ${res.text?.slice(0, 200)}` };
  if (stream) {
    const fins = [...res.text.matchAll(/"finish_reason":"(\w+)"/g)].map((m) => m[1]);
    const ok = res.text.includes('data: [DONE]') && fins.length > 0 &&
      fins.every((f) => f === 'stop' || f === 'length') && !res.text.includes('"error"');
    return { kind: 'valid', ok, why: ok ? '' : res.text.slice(-300) };
  }
  let j = null;
  try { j = JSON.parse(res.text); } catch { /* counted below */ }
  const ok = !!j && Array.isArray(j.choices) &&
    j.choices.every((c) => c.finish_reason === 'stop' || c.finish_reason === 'length');
  return { kind: 'valid', ok, why: ok ? '' : res.text.slice(0, 300) };
}

const perRound = Math.ceil(total / rounds);
const rows = [];
let bad = 0, crashes = 0;
for (let round = 1; round <= rounds; round++) {
  const counts = { valid: [0, 0], invalid: [0, 0], dropped: [0, 0], gap: [0, 0] };
  let next = 0;
  const workers = Array.from({ length: concurrency }, async () => {
    while (next < perRound && !exited) {
      next++;
      const r = await one();
      counts[r.kind][0]++;
      if (!r.ok) {
        counts[r.kind][1]++;
        if (bad++ < 5) console.error(`round ${round}: ${r.kind} request misbehaved: ${r.why ?? ''}`);
      }
    }
  });
  await Promise.all(workers);
  if (exited) { crashes++; break; }
  // the engine drains: nothing running or waiting, the KV cache empty (bounded wait)
  let m = '';
  for (let i = 0; i < 600; i++) {
    m = (await get('/metrics')).text;
    if (metric(m, 'vllm:num_requests_running') === 0 && metric(m, 'vllm:num_requests_waiting') === 0 &&
        metric(m, 'vllm:kv_cache_usage_perc') === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  rows.push({ round, ...Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, `${v[0]} (${v[1]} bad)`])),
    running: metric(m, 'vllm:num_requests_running'), waiting: metric(m, 'vllm:num_requests_waiting'),
    kv: metric(m, 'vllm:kv_cache_usage_perc'), rss_mib: rssMiB().toFixed(1),
    health: (await get('/health')).status });
}
server.kill('SIGTERM');
const code = await new Promise((r) => (exited ? r(exited) : server.on('exit', (c, s) => r({ code: c, sig: s }))));
console.table(rows);
console.log(`requests: ${total} in ${rounds} rounds, concurrency ${concurrency}; misbehaved: ${bad}; ` +
  `crashes: ${crashes}; exit on SIGTERM: ${JSON.stringify(code)}`);
const flat = rows.length === rounds && rows.every((r) => r.running === 0 && r.waiting === 0 && r.kv === 0);
process.exit(bad === 0 && crashes === 0 && flat && code.code === 0 ? 0 : 1);
