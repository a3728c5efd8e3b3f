// hub_worker.mjs -- the production worker (RunPod's job loop, fake_runpod.mjs) started
// with MODEL_NAME as a Hub id (the fake Hub of test_hub.sh):
//   - a gated model without a token: one unhealthy ping (check=model_load) whose reason
//     is the Hub's advice, no job taken, exit 1;
//   - tiny/llama downloaded at start into $BASE_PATH/huggingface-cache/hub, then a job
//     served from it.
// usage: node hub_worker.mjs PAGELLM WORKDIR   (HF_ENDPOINT names the fake Hub)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FakeRunPod } from './fake_runpod.mjs';

const [PAGELLM, WORK] = process.argv.slice(2);
let failed = 0;
const check = (cond, what, detail = '') => {
  console.log(`${cond ? 'ok  ' : 'FAIL'} worker: ${what}${cond ? '' : ` -- ${detail}`}`);
  if (!cond) failed++;
};

function start(fake, extra) {
  const env = { ...process.env, ...fake.env(), MAX_CONCURRENCY: '1', ...extra };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const p = spawn(PAGELLM, ['worker', '--threads', '1'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  p.err = '';
  p.stdout.on('data', () => {});
  p.stderr.on('data', (d) => { p.err += d; });
  p.exited = new Promise((r) => p.on('exit', (code) => r(code)));
  return p;
}

// 1. a gated model and no token
{
  const fake = await new FakeRunPod().start();
  const p = start(fake, { MODEL_NAME: 'tiny/gated', HF_HOME: path.join(WORK, 'wg'),
    BASE_PATH: path.join(WORK, 'no-volume'), HF_TOKEN: undefined });
  const code = await p.exited;
  const pings = fake.of('ping');
  const reason = pings.length ? pings[0].query.reason || '' : '';
  check(code === 1, 'gated MODEL_NAME without a token exits 1', `exit ${code}: ${p.err}`);
  check(pings.length === 1 && pings[0].query.status === 'unhealthy' && pings[0].query.check === 'model_load',
    'one unhealthy ping (model_load)', pings.map((x) => x.rawQuery).join(' | '));
  check(reason.startsWith('ModelLoadError: tiny/gated is a gated model') && reason.includes('accept its licence'),
    'its reason is the Hub\'s advice', reason);
  check(fake.of('job-take').length === 0, 'no job taken');
  await fake.stop();
}

// 2. downloaded at start onto the "volume", then a job
{
  const volume = path.join(WORK, 'pvolume');
  fs.mkdirSync(volume, { recursive: true });
  const fake = await new FakeRunPod().start();
  const p = start(fake, { MODEL_NAME: 'tiny/llama', HOME: path.join(WORK, 'pw-home'), BASE_PATH: volume });
  try {
    fake.takeQ.push({ json: { id: 'hubjob', input: { prompts: ['The capital of France is'], max_tokens: 4, temperature: 0 } } });
    const done = await Promise.race([
      fake.waitFor((r) => r.kind === 'job-done' && r.path.endsWith('/hubjob'), 180000),
      p.exited.then((code) => { throw new Error(`worker exited ${code}: ${p.err}`); }),
    ]);
    const body = JSON.parse(done.body.toString());
    check(body.output && body.output.results && body.output.results.length === 1,
      'a job served by a model downloaded at start', done.body.toString());
    const ref = path.join(volume, 'huggingface-cache/hub/models--tiny--llama/refs/main');
    check(fs.existsSync(ref), 'into $BASE_PATH/huggingface-cache/hub');
  } catch (e) {
    check(false, 'a job served by a model downloaded at start', `${e.message} ${p.err}`);
  } finally {
    if (p.exitCode === null) p.kill('SIGKILL');
    await p.exited;
    await fake.stop();
  }
}
process.exit(failed ? 1 : 0);
