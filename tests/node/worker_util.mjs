// worker_util.mjs -- helpers shared by the worker's hardening and reliability tests
// (runpod_local_api.mjs, runpod_faults.mjs): start `pagellm worker`, wait for log lines,
// find the port the local API bound (--rp_api_port 0), and plain HTTP on loopback.
// No helper waits a fixed time: everything polls a condition under a generous hang guard.
import { spawn } from 'node:child_process';
import http from 'node:http';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The hang guard of every wait (ms): only a hang or a real defect takes this long.
export const GUARD = 120000;

let failures = 0, checks = 0;
const passedIds = new Set();
export function check(cond, id, msg) {
  checks++;
  if (!cond) { failures++; console.log(`FAIL ${id}: ${msg}`); } else passedIds.add(id);
}
export const failed = () => failures;
export const report = () => `${checks} checks (${[...passedIds].join(' ')}), ${failures} failure(s)`;

// Starts a worker; p.log() is stdout + stderr so far.
export function startWorker(pagellm, model, env = {}, args = []) {
  const e = { ...process.env, ...env };
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  const p = spawn(pagellm, ['worker', '--model', model, '--threads', '1', ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  p.out = ''; p.err = '';
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.err += d; });
  p.log = () => p.out + p.err;
  p.exited = new Promise((r) => p.on('exit', (code) => r(code)));
  return p;
}

export async function stopWorker(p) {
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await p.exited;
}

// Polls until fn() is truthy (returns its value); throws after `guard` ms.
export async function until(fn, what, guard = GUARD) {
  const end = Date.now() + guard;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`hang guard: ${what} not seen in ${guard} ms`);
    await sleep(20);
  }
}

// Waits for a log line matching re; returns the match.
export function waitLog(p, re, guard = GUARD) {
  return until(() => {
    if (p.exitCode !== null) throw new Error(`worker exited (${p.exitCode}) before ${re}: ${p.log()}`);
    return re.exec(p.log());
  }, `log ${re}`, guard);
}

// The local API's port, from its start line (run it with --rp_api_port 0).
export async function apiPort(p) {
  const m = await waitLog(p, /local test API on http:\/\/[^:\s]+:(\d+)/);
  return Number(m[1]);
}

export function request(port, method, path, data, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false,
      headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => {
        let j = null;
        try { j = JSON.parse(b); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, body: b, json: j });
      });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(typeof data === 'string' ? data : JSON.stringify(data));
    req.end();
  });
}
