// fake_hub.mjs -- a fake Hugging Face Hub on loopback for tests/cli/test_hub.sh.
//
// usage: node fake_hub.mjs CONFIG.json
// Prints "READY <hubPort> <cdnPort>" once both servers listen (ports chosen by
// the OS). Two servers: the Hub (API and resolve) and a storage host (the
// "CDN") that LFS resolves redirect to, so a client must follow a 302 to a
// second host:port -- and must not send its token there.
//
// The documented API it implements:
//   GET  /api/models/{org}/{name}/revision/{rev}[?blobs=true]
//        -> {id, sha, gated, siblings: [{rfilename, size, blobId, lfs: {sha256, size,
//           pointerSize}}]} (size/blobId/lfs only with blobs=true)
//   HEAD|GET /{org}/{name}/resolve/{rev}/{file}
//        -> LFS files: 302 to the CDN with X-Linked-Etag (sha256), X-Linked-Size;
//           others: 200 with the bytes, ETag = git blob sha1; both X-Repo-Commit.
//   GET  /blobs/{sha256} on the CDN, with Range.
// Errors as the Hub sends them: 401 + X-Error-Code RepoNotFound for an unknown repo
// without a token (404 with one), 404 RevisionNotFound, 404 EntryNotFound,
// 401/403 GatedRepo for a gated repo without / with a refused token.
// A renamed repo answers 307 with a relative Location, as the Hub does.
//
// CONFIG: {"tokens": ["hf_good"],
//          "repos": {"org/name": {"gated": false, "renamedTo": "org/other",
//             "revisions": {"main": {"dir": "/model", "files": {"README.md": "text"},
//                                    "omit": ["x"]}},
//             "faults": {"model.safetensors": {"cutAfter": 1000, "cutTimes": 1,
//                        "slow": true, "holdAfter": 5000, "corrupt": true,
//                        "advertiseSize": 1e15}}}}}
// Control (on the Hub port): GET /_log (every request seen, JSON), GET
// /_release?repo=ID (lets that repo's held transfers go on), GET /_counts (body GETs
// per "repo/file").
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const tokens = new Set(cfg.tokens || []);
const log = [];
const released = new Set(); // repos whose held transfers may go on
const waiters = [];         // [repo, resolve]
const getCounts = new Map(); // "repo/file" -> GETs of the body so far

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const gitSha1 = (b) => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfs = (name, size) => /\.(safetensors|bin|pt|pth|model)$/.test(name) || size >= 10 << 20;

function listFiles(dir, base = '') {
  const out = [];
  for (const e of fs.readdirSync(path.join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else out.push(rel);
  }
  return out;
}

// repos[id] = {gated, renamedTo, faults, revs: {name: commit}, commits: {sha: {files}}}
const repos = {};
for (const [id, r] of Object.entries(cfg.repos || {})) {
  const repo = { gated: !!r.gated, renamedTo: r.renamedTo, faults: r.faults || {}, revs: {}, commits: {} };
  for (const [rev, spec] of Object.entries(r.revisions || {})) {
    const files = new Map();
    if (spec.dir) for (const f of listFiles(spec.dir)) files.set(f, fs.readFileSync(path.join(spec.dir, f)));
    for (const [f, text] of Object.entries(spec.files || {})) files.set(f, Buffer.from(text));
    for (const f of spec.omit || []) files.delete(f);
    const meta = new Map();
    const h = crypto.createHash('sha1').update(`${id}\0${rev}\0`);
    for (const f of [...files.keys()].sort()) {
      const b = files.get(f);
      const m = { data: b, size: b.length, sha256: sha256(b), git: gitSha1(b) };
      m.lfs = isLfs(f, b.length);
      if (m.lfs) {
        const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${m.sha256}\nsize ${b.length}\n`;
        m.pointerSize = pointer.length;
        m.pointerGit = gitSha1(Buffer.from(pointer));
      }
      meta.set(f, m);
      h.update(`${f}\0${m.sha256}\0`);
    }
    const sha = h.digest('hex');
    repo.revs[rev] = sha;
    repo.commits[sha] = { files: meta };
  }
  repos[id] = repo;
}

function record(server, req) {
  log.push({ server, method: req.method, url: req.url, range: req.headers.range || null,
    auth: req.headers.authorization || null, ua: req.headers['user-agent'] || null });
}

function hubError(res, status, code, message, extra = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'X-Error-Code': code,
    'X-Error-Message': message, ...extra });
  res.end(JSON.stringify({ error: message }));
}

function token(req) {
  const a = req.headers.authorization || '';
  return a.startsWith('Bearer ') ? a.slice(7) : null;
}

function findRev(repo, rev) {
  if (repo.revs[rev]) return repo.revs[rev];
  if (/^[0-9a-f]{40}$/.test(rev) && repo.commits[rev]) return rev;
  return null;
}

// Sends data[start..] honoring faults: cut, slow, hold, corrupt.
async function sendBody(req, res, id, file, m, fault, status, headers) {
  const key = `${id}/${file}`;
  const n = (getCounts.get(key) || 0) + (req.method === 'GET' ? 1 : 0);
  getCounts.set(key, n);
  let data = m.data;
  if (fault.corrupt) {
    data = Buffer.from(data);
    data[data.length >> 1] ^= 0xff;
  }
  let start = 0;
  let end = data.length - 1;
  const range = req.headers.range;
  if (range) {
    const mm = /^bytes=(\d+)-(\d*)$/.exec(range);
    if (!mm) { res.writeHead(400); res.end(); return; }
    start = Number(mm[1]);
    if (mm[2]) end = Math.min(Number(mm[2]), data.length - 1);
    if (start >= data.length) {
      res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
      res.end();
      return;
    }
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
  }
  headers['Content-Length'] = end - start + 1;
  headers['Accept-Ranges'] = 'bytes';
  res.writeHead(status, headers);
  if (req.method === 'HEAD') { res.end(); return; }
  const body = data.subarray(start, end + 1);
  const cut = fault.cutAfter !== undefined && n <= (fault.cutTimes ?? 1) ? fault.cutAfter : -1;
  const hold = fault.holdAfter !== undefined && !released.has(id) && start < fault.holdAfter ? fault.holdAfter - start : -1;
  const chunk = fault.slow ? 4096 : 1 << 16;
  let off = 0;
  const write = (b) => new Promise((resolve) => { if (!res.write(b)) res.once('drain', resolve); else resolve(); });
  while (off < body.length) {
    if (res.destroyed) return;
    let stop = body.length;
    if (cut >= 0 && off < cut) stop = Math.min(stop, cut);
    if (hold >= 0 && off < hold) stop = Math.min(stop, hold);
    const piece = body.subarray(off, Math.min(stop, off + chunk));
    await write(piece);
    off += piece.length;
    if (cut >= 0 && off >= cut) {
      // the bytes so far reach the client, then the connection breaks mid-body
      await new Promise((r) => setTimeout(r, 20));
      res.socket.destroy();
      return;
    }
    if (hold >= 0 && off === hold && !released.has(id)) {
      await new Promise((r) => waiters.push([id, r]));
      if (res.destroyed) return;
    }
    if (fault.slow) await new Promise((r) => setTimeout(r, 2));
  }
  res.end();
}

let cdnPort = 0;

const hub = http.createServer(async (req, res) => {
  record('hub', req);
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/_log') { res.end(JSON.stringify(log)); return; }
  if (u.pathname === '/_release') {
    const id = u.searchParams.get('repo');
    released.add(id);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i][0] === id) waiters.splice(i, 1)[0][1]();
    }
    res.end('{}');
    return;
  }
  if (u.pathname === '/_counts') { res.end(JSON.stringify(Object.fromEntries(getCounts))); return; }
  let m = /^\/api\/models\/([^/]+)\/([^/]+)\/revision\/([^/]+)$/.exec(u.pathname);
  if (m) {
    const id = `${m[1]}/${m[2]}`;
    const rev = decodeURIComponent(m[3]);
    const repo = repos[id];
    if (repo && repo.renamedTo) {
      res.writeHead(307, { Location: `/api/models/${repo.renamedTo}/revision/${m[3]}${u.search}` });
      res.end();
      return;
    }
    if (!repo) return hubError(res, token(req) ? 404 : 401, 'RepoNotFound', 'Repository not found');
    const sha = findRev(repo, rev);
    if (!sha) return hubError(res, 404, 'RevisionNotFound', 'Invalid rev id: ' + rev);
    const blobs = u.searchParams.get('blobs') === 'true';
    const siblings = [];
    for (const [f, meta] of repo.commits[sha].files) {
      const s = { rfilename: f };
      if (blobs) {
        const fault = repo.faults[f] || {};
        const size = fault.advertiseSize ?? meta.size;
        s.size = size; // LFS files: the object's size, as the Hub lists it
        s.blobId = meta.lfs ? meta.pointerGit : meta.git;
        if (meta.lfs) s.lfs = { sha256: meta.sha256, size, pointerSize: meta.pointerSize };
      }
      siblings.push(s);
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ _id: 'x', id, modelId: id, sha, private: false,
      gated: repo.gated ? 'manual' : false, disabled: false, siblings }));
    return;
  }
  m = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(u.pathname);
  if (m && (req.method === 'GET' || req.method === 'HEAD')) {
    const id = `${m[1]}/${m[2]}`;
    const rev = decodeURIComponent(m[3]);
    const file = decodeURIComponent(m[4]);
    const repo = repos[id];
    if (repo && repo.renamedTo) {
      res.writeHead(307, { Location: `/${repo.renamedTo}/resolve/${m[3]}/${m[4]}` });
      res.end();
      return;
    }
    if (!repo) return hubError(res, token(req) ? 404 : 401, 'RepoNotFound', 'Repository not found');
    const sha = findRev(repo, rev);
    if (!sha) return hubError(res, 404, 'RevisionNotFound', 'Invalid rev id: ' + rev);
    if (repo.gated) {
      const t = token(req);
      if (!t) return hubError(res, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      if (!tokens.has(t)) return hubError(res, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${id} to ask for access.`);
    }
    const meta = repo.commits[sha].files.get(file);
    if (!meta) return hubError(res, 404, 'EntryNotFound', `${file} does not exist`, { 'X-Repo-Commit': sha });
    const fault = repo.faults[file] || {};
    if (meta.lfs) {
      res.writeHead(302, {
        Location: `http://127.0.0.1:${cdnPort}/blobs/${meta.sha256}?repo=${encodeURIComponent(id)}&file=${encodeURIComponent(file)}`,
        'X-Repo-Commit': sha, 'X-Linked-Etag': `"${meta.sha256}"`,
        'X-Linked-Size': String(fault.advertiseSize ?? meta.size), ETag: `"${meta.pointerGit}"`,
        'Content-Length': 0 });
      res.end();
      return;
    }
    await sendBody(req, res, id, file, meta, fault, 200, { ETag: `"${meta.git}"`, 'X-Repo-Commit': sha,
      'Content-Type': 'application/octet-stream' });
    return;
  }
  res.writeHead(404);
  res.end();
});

const cdn = http.createServer(async (req, res) => {
  record('cdn', req);
  const u = new URL(req.url, 'http://x');
  const m = /^\/blobs\/([0-9a-f]{64})$/.exec(u.pathname);
  const id = u.searchParams.get('repo');
  const file = u.searchParams.get('file');
  const repo = repos[id];
  if (!m || !repo) { res.writeHead(404); res.end(); return; }
  for (const c of Object.values(repo.commits)) {
    const meta = c.files.get(file);
    if (meta && meta.sha256 === m[1]) {
      await sendBody(req, res, id, file, meta, repo.faults[file] || {}, 200,
        { 'Content-Type': 'application/octet-stream', ETag: `"${meta.sha256}"` });
      return;
    }
  }
  res.writeHead(404);
  res.end();
});

hub.listen(0, '127.0.0.1', () => {
  cdn.listen(0, '127.0.0.1', () => {
    cdnPort = cdn.address().port;
    process.stdout.write(`READY ${hub.address().port} ${cdnPort}\n`);
  });
});
process.on('SIGTERM', () => process.exit(0));
