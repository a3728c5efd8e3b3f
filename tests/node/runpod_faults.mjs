// runpod_faults.mjs -- reliability figure "the worker under job-server faults" (docs/results.md):
// one worker (MAX_CONCURRENCY 4) takes JOBS jobs from the fake job server while it injects
// 5xx answers, a 503 storm on every kind of request, 429s (with and without Retry-After),
// connections reset mid-post and a job-server restart. Every accepted job must either
// post its result (a job-done answered 2xx, with the right output) or be logged with its
// id ("could not be posted"): 0 results lost. Jobs whose faults stay within the retry
// policy (docs/runpod.md) must be posted; jobs whose result post is answered 5xx three
// times must be logged after exactly 3 attempts. Retry waits are scaled to 10 %
// (PL_RUNPOD_RETRY_SCALE_PCT) to keep the run short; no check depends on how fast
// anything runs (lower bounds only, every wait is a condition under a hang guard).
// Usage: node runpod_faults.mjs PAGELLM MODEL_DIR
import { execFileSync } from 'node:child_process';
import { FakeRunPod } from './fake_runpod.mjs';
import { startWorker, stopWorker, until, check, failed, report } from './worker_util.mjs';

const [PAGELLM, MODEL] = process.argv.slice(2);
const JOBS = 48;
const letters = 'abcdefgh';

// T(x): the greedy text of x (3 tokens), from `pagellm generate`
const gen = execFileSync(PAGELLM, ['generate', '--model', MODEL, '--temperature', '0', '--ignore-eos', '--max-tokens', '3', '--json',
  ...[...letters].flatMap((p) => ['--prompt', p])], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n');
const T = Object.fromEntries([...letters].map((p, i) => [p, JSON.parse(gen[i]).outputs[0].text]));

// The fault each job's posts meet, by index (kind k = i % 8); 'r1' triggers the restart and
// 's1' the storm.
const KIND = ['none', '5xx-then-ok', '429-retry-after', 'reset-once', '5xx-exhausted', '429-x4', 'stream-503s', 'reset-twice'];
const jobs = [];
for (let i = 0; i < JOBS; i++) {
  const k = i % 8;
  const id = i === 9 ? 'r1' : i === 25 ? 's1' : `j${i}`;
  const p = letters[i % 8];
  const input = k === 6
    ? { prompt: p, stream: true, max_batch_size: 1, sampling_params: { max_tokens: 3, temperature: 0, ignore_eos: true } }
    : { prompts: [p], max_tokens: 3, temperature: 0, sampling_params: { ignore_eos: true } };
  jobs.push({ id, kind: id === 'r1' ? 'restart' : id === 's1' ? 'storm' : KIND[k], p, input });
}
const byId = new Map(jobs.map((j) => [j.id, j]));
const injected = { '5xx': 0, '429': 0, reset: 0 };

const fake = await new FakeRunPod().start();
let restarting = null;
fake.postAnswer = (r) => {
  const id = r.path.split('/').pop();
  const j = byId.get(id);
  if (!j) return { status: 200 };
  const n = fake.of(r.kind, id).length; // this post's attempt number (per kind)
  const stream = r.kind === 'job-stream';
  if (stream) {
    if (j.kind !== 'stream-503s') return { status: 200 };
    // every chunk's first attempt 503: attempts alternate 503, 200
    const prev = fake.of('job-stream', id).slice(0, -1).filter((x) => x.body === r.body).length;
    if (prev === 0) { injected['5xx']++; return { status: 503 }; }
    return { status: 200 };
  }
  switch (j.kind) {
    case '5xx-then-ok': if (n <= 2) { injected['5xx']++; return { status: n === 1 ? 503 : 502 }; } break;
    case '5xx-exhausted': injected['5xx']++; return { status: 500 };
    case '429-retry-after': if (n === 1) { injected['429']++; return { status: 429, headers: { 'Retry-After': '1' } }; } break;
    case '429-x4': if (n <= 4) { injected['429']++; return { status: 429 }; } break;
    case 'reset-once': if (n === 1) { injected.reset++; return { reset: true }; } break;
    case 'reset-twice': if (n <= 2) { injected.reset++; return { reset: true }; } break;
    case 'restart':
      if (n === 1) { injected.reset++; restarting = fake.restart(2000); return { reset: true }; }
      break;
    case 'storm': if (n === 1) fake.storm(12); break; // this post is answered 200, the next 12 requests 503
  }
  return { status: 200 };
};
// hand the jobs out in batches as the worker asks, with take-side faults between them
const handedOut = [];
let next = 0;
const takeFaults = { 503: 0, 429: 0, 500: 0 };
const w = startWorker(PAGELLM, MODEL, { ...fake.env(), MAX_CONCURRENCY: '4', PL_RUNPOD_RETRY_SCALE_PCT: '10', PL_RUNPOD_BACKOFF_MS: '500' });
const takeAnswer = (rec) => {
  const want = Number(rec.query.batch_size || 1);
  const batch = jobs.slice(next, next + want);
  next += batch.length;
  handedOut.push(...batch.map((j) => j.id));
  return { json: batch.map((j) => ({ id: j.id, input: j.input })) };
};
fake.takeQ.push({ status: 503 }, { status: 503 }, { status: 429 });
takeFaults[503] += 2; takeFaults[429]++;
let fed = 0;
const feeder = setInterval(() => {
  // keep a scripted answer ready while jobs remain; a fault after every 8th batch
  if (fake.takeQ.length === 0 && next < JOBS) {
    fed++;
    if (fed % 8 === 0) { fake.takeQ.push({ status: 500 }); takeFaults[500]++; }
    fake.takeQ.push(takeAnswer);
  }
}, 10);

const logOf = () => w.out.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
const postedOk = (id) => fake.of('job-done', id).some((r) => r.answer && r.answer.status >= 200 && r.answer.status < 300 && !r.answer.storm);
const droppedLog = (id) => logOf().some((l) => l.requestId === id && l.level === 'ERROR' && l.message.includes(`result of job ${id} could not be posted`));
try {
  await until(() => next >= JOBS, 'all jobs handed out');
  await until(() => handedOut.every((id) => postedOk(id) || droppedLog(id)), 'every job posted or logged', 300000);
  if (restarting) await restarting;
  clearInterval(feeder);
  w.kill('SIGTERM');
  const code = await w.exited;
  check(code === 0, 'exit', `worker exit ${code}`);

  const log = logOf();
  const accepted = handedOut.filter((id) => log.some((l) => l.requestId === id));
  const posted = handedOut.filter(postedOk);
  const dropped = handedOut.filter((id) => !postedOk(id) && droppedLog(id));
  const lost = handedOut.filter((id) => !postedOk(id) && !droppedLog(id));
  check(handedOut.length === JOBS && accepted.length === JOBS, 'accepted', `${handedOut.length} handed out, ${accepted.length} accepted`);
  check(lost.length === 0, 'LOST0', `lost: ${lost}`);
  // the right output, however many attempts it took
  for (const id of posted) {
    const j = byId.get(id);
    const d = fake.of('job-done', id).find((r) => r.answer && r.answer.status === 200 && !r.answer.storm);
    const out = JSON.parse(d.body).output;
    const text = j.kind === 'stream-503s' ? out.map((c) => c.choices[0].tokens.join('')).join('') : out.results[0].text;
    check(text === T[j.p], 'OUTPUT', `${id}: ${JSON.stringify(text)} vs ${JSON.stringify(T[j.p])}`);
  }
  // faults within the retry policy lose nothing; 5xx three times is logged after exactly 3
  // attempts. The storm's 503s land on whatever requests come next, so a job one of them
  // hit is held to the invariant above only.
  const stormHitJob = (id) => fake.of('job-done', id).some((r) => r.answer && r.answer.storm);
  for (const j of jobs) {
    const n = fake.of('job-done', j.id).length;
    if (j.kind === '5xx-exhausted') check(dropped.includes(j.id) && n === 3, 'EXHAUSTED', `${j.id}: ${n} attempts, logged ${droppedLog(j.id)}`);
    else if (j.kind !== 'storm' && !stormHitJob(j.id)) check(posted.includes(j.id), 'RETRIED', `${j.id} (${j.kind}): not posted after ${n} attempt(s)`);
  }
  // a 429's Retry-After: 1 is honoured although the other waits are scaled down to 10 %
  for (const j of jobs.filter((x) => x.kind === '429-retry-after' && !stormHitJob(x.id))) {
    const d = fake.of('job-done', j.id);
    check(d.length >= 2 && d[1].t - d[0].t >= 1000, 'RETRY-AFTER', `${j.id}: gap ${d.length >= 2 ? d[1].t - d[0].t : 'none'} ms`);
  }
  // the job server restarted while r1's result was posted: posted once it was back
  const r1 = fake.of('job-done', 'r1');
  check(fake.faults.restarts === 1 && (postedOk('r1') || stormHitJob('r1')) && r1.length >= 2, 'RESTART', `${r1.length} attempts`);
  const attempts = handedOut.reduce((s, id) => s + fake.of('job-done', id).length, 0);
  const stormHit = fake.reqs.filter((r) => r.answer && r.answer.storm);
  const summary = {
    jobs: JOBS, accepted: accepted.length, posted: posted.length, dropped_and_logged: dropped.length, lost: lost.length,
    dropped_by_cause: dropped.reduce((m, id) => { const k = stormHitJob(id) ? `${byId.get(id).kind}+storm` : byId.get(id).kind; m[k] = (m[k] || 0) + 1; return m; }, {}),
    result_post_attempts: attempts,
    faults: { post_5xx: injected['5xx'], post_429: injected['429'], post_resets: injected.reset, restarts: fake.faults.restarts,
      storm_503: fake.faults.storm503, storm_hit: Object.fromEntries(['job-take', 'job-take-batch', 'job-stop', 'job-done', 'job-stream', 'ping'].map((k) => [k, stormHit.filter((r) => r.kind === k).length])),
      take_503: takeFaults[503], take_429: takeFaults[429], take_500: takeFaults[500] },
  };
  console.log(`RELIABILITY ${JSON.stringify(summary)}`);
} catch (e) {
  check(false, 'faults', `${e.stack}\n${w.log().slice(-3000)}`);
} finally {
  clearInterval(feeder);
  await stopWorker(w);
  await fake.stop().catch(() => {});
}
console.log(report());
process.exit(failed() ? 1 : 0);
