// server_util.mjs -- shared helpers of the server client tests (tests/cli/test_server.sh runs them).
// Env: PL_BASE_URL (http://127.0.0.1:PORT), PL_API_KEY, PL_MODEL_NAME, PAGELLM (binary),
// PL_MODEL_DIR (the model the server serves).
import { execFileSync } from 'node:child_process';

export const BASE_URL = process.env.PL_BASE_URL;
export const API_KEY = process.env.PL_API_KEY ?? 'EMPTY';
export const MODEL = process.env.PL_MODEL_NAME;
export const PAGELLM = process.env.PAGELLM;
export const MODEL_DIR = process.env.PL_MODEL_DIR;
if (!BASE_URL || !MODEL || !PAGELLM || !MODEL_DIR) {
  console.error('server tests need PL_BASE_URL, PL_MODEL_NAME, PAGELLM and PL_MODEL_DIR');
  process.exit(2);
}

let failed = 0, passed = 0;
const tests = [];
export function test(name, fn) { tests.push([name, fn]); }
export async function run() {
  const only = process.env.PL_ONLY ? new RegExp(process.env.PL_ONLY) : null;
  for (const [name, fn] of tests) {
    if (only && !only.test(name)) continue;
    try {
      await fn();
      passed++;
      console.log(`ok   ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

export function assert(cond, msg) { if (!cond) throw new Error(msg ?? 'assertion failed'); }
export function eq(a, b, msg) {
  const sa = JSON.stringify(a), sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${msg ?? 'not equal'}:\n  got:  ${sa}\n  want: ${sb}`);
}

// `pagellm generate --json` (greedy) for prompts given as {text} or {ids}: the offline reference.
export function generate(prompts, maxTokens, extra = []) {
  const args = ['generate', '--model', MODEL_DIR, '--max-tokens', String(maxTokens), '--temperature', '0',
                '--json', '--no-progress', ...extra];
  for (const p of prompts) {
    if (p.ids) args.push('--prompt-ids', p.ids.join(','));
    else args.push('--prompt', p.text);
  }
  const out = execFileSync(PAGELLM, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'],
                                              maxBuffer: 64 << 20 });
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

export async function http(method, path, body, headers = {}) {
  const h = { ...headers };
  if (body !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
  const res = await fetch(BASE_URL + path, {
    method, headers: h,
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

export const auth = { Authorization: `Bearer ${API_KEY}` };

export async function metric(name) {
  const r = await http('GET', '/metrics');
  for (const line of r.text.split('\n')) {
    if (line.startsWith(name)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return NaN;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
