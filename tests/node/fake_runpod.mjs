// fake_runpod.mjs -- a fake RunPod job server on loopback for the worker's
// conformance tests (docs/runpod-protocol.md section 6.1).
//
// Records every request (method, path, parsed query, raw query, headers, raw
// body, arrival time in ms) and answers from scripted queues:
//   takeQ / stopQ: answers for job-take(-batch) / job-stop polls, in order; an
//     empty queue holds the poll `hold` ms then answers 204. An entry is
//     {status, ctype, body | json, delay, gzip} or {never: true} (never answered) or a
//     function (rec) -> entry.
//   postAnswer(rec) -> {status, delay} for job-done / job-stream posts (200).
//   pingAnswer(rec) -> {status} for pings (200).
// Every answer may also carry headers: {...} (e.g. Retry-After), until: a promise
// (answered once it resolves: a test holds a job in flight as long as it needs),
// or reset: true (the connection is destroyed without an answer: a reset mid-post).
// Fault modes for the reliability test: storm(n) answers the next n requests of any
// kind 503; restart(downMs) closes the server and every connection and listens again
// on the same port downMs later (a job-server restart; the record survives).
// Each record keeps the answer it got (rec.answer).
import http from 'node:http';
import zlib from 'node:zlib';

export class FakeRunPod {
  constructor() {
    this.reqs = [];
    this.takeQ = [];
    this.stopQ = [];
    this.hold = 200;
    this.postAnswer = () => ({ status: 200 });
    this.pingAnswer = () => ({ status: 200 });
    this.waiters = [];
    this.sockets = new Set();
    this.pending = new Set();
    this.stormLeft = 0;
    this.faults = { storm503: 0, restarts: 0 };
  }

  storm(n) { this.stormLeft += n; }

  // Down for downMs (from when every connection is closed), then back on the same port.
  async restart(downMs) {
    const port = this.port;
    await this.stop();
    this.faults.restarts++;
    await new Promise((r) => setTimeout(r, downMs));
    // the port is free again unless another socket grabbed it meanwhile: try until it is
    for (let i = 0; ; i++) {
      try { await this.start(port); return; } catch (e) {
        if (e.code !== 'EADDRINUSE' || i > 1200) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  url(kind) {
    const b = `http://127.0.0.1:${this.port}/v2/ep`;
    return {
      take: `${b}/job-take/$ID?gpu=SIM`,
      done: `${b}/job-done/$RUNPOD_POD_ID/$ID?gpu=SIM`,
      stream: `${b}/job-stream/$RUNPOD_POD_ID/$ID?gpu=SIM`,
      ping: `${b}/ping/$RUNPOD_POD_ID?gpu=SIM`,
    }[kind];
  }

  env() {
    return {
      RUNPOD_WEBHOOK_GET_JOB: this.url('take'),
      RUNPOD_WEBHOOK_POST_OUTPUT: this.url('done'),
      RUNPOD_WEBHOOK_POST_STREAM: this.url('stream'),
      RUNPOD_WEBHOOK_PING: this.url('ping'),
      RUNPOD_AI_API_KEY: 'test-key',
      RUNPOD_POD_ID: 'w1',
      RUNPOD_PING_INTERVAL: '1000',
      RUNPOD_ENDPOINT_ID: 'ep',
    };
  }

  static kindOf(path) {
    const m = /^\/v2\/ep\/(job-take|job-take-batch|job-stop|job-done|job-stream|ping)\//.exec(path);
    return m ? m[1] : 'other';
  }

  start(port = 0) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60000;
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  // Closes the server and every connection (a job server that disappears).
  stop() {
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  later(ms, fn) {
    const t = setTimeout(() => { this.pending.delete(t); fn(); }, ms);
    this.pending.add(t);
  }

  handle(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url, 'http://x');
      const rec = {
        method: req.method, path: u.pathname, rawQuery: u.search.slice(1),
        query: Object.fromEntries(u.searchParams), headers: req.headers,
        raw: Buffer.concat(chunks), t: Date.now(), kind: FakeRunPod.kindOf(u.pathname),
      };
      rec.body = rec.raw.toString('utf8');
      rec.rawHeaders = req.rawHeaders;
      this.reqs.push(rec);
      this.answer(rec, res); // sets rec.answer before any waiter looks at rec
      this.waiters = this.waiters.filter((w) => !(w.pred(rec) && (w.resolve(rec), true)));
    });
  }

  send(res, a) {
    if (a.never) return;
    if (a.reset) { res.socket?.destroy(); return; }
    if (a.until) { a.until.then(() => this.send(res, { ...a, until: undefined })); return; }
    const go = () => {
      if (res.destroyed) return;
      const h = { ...(a.headers ?? {}) };
      if (a.ctype) h['Content-Type'] = a.ctype;
      if (a.contentLength0) h['Content-Length'] = '0';
      let payload = a.body ?? '';
      if (a.gzip) { h['Content-Encoding'] = 'gzip'; payload = zlib.gzipSync(payload); }
      res.writeHead(a.status ?? 200, h);
      res.end(a.contentLength0 ? undefined : payload);
    };
    if (a.delay) this.later(a.delay, go); else go();
  }

  answer(rec, res) {
    if (this.stormLeft > 0) {
      this.stormLeft--;
      this.faults.storm503++;
      rec.answer = { status: 503, storm: true };
      return this.send(res, rec.answer);
    }
    if (rec.kind === 'job-take' || rec.kind === 'job-take-batch' || rec.kind === 'job-stop') {
      const q = rec.kind === 'job-stop' ? this.stopQ : this.takeQ;
      let a = q.shift();
      if (typeof a === 'function') a = a(rec);
      if (!a) a = { status: 204, delay: this.hold };
      if (a.json !== undefined) { a.body = JSON.stringify(a.json); a.ctype = a.ctype ?? 'application/json'; }
      rec.answer = a;
      return this.send(res, a);
    }
    if (rec.kind === 'job-done' || rec.kind === 'job-stream') return this.send(res, (rec.answer = this.postAnswer(rec) ?? { status: 200 }));
    if (rec.kind === 'ping') return this.send(res, (rec.answer = this.pingAnswer(rec) ?? { status: 200 }));
    this.send(res, { status: 404 });
  }

  // Resolves with the first request (now or later, from index `from`) matching pred.
  waitFor(pred, timeoutMs = 120000, from = 0) {
    const hit = this.reqs.slice(from).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (r) => { clearTimeout(t); resolve(r); } };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`timeout (${timeoutMs} ms) waiting for a request: ${pred}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  of(kind, jobId) {
    return this.reqs.filter((r) => r.kind === kind && (!jobId || r.path.endsWith('/' + jobId)));
  }
}
