#!/usr/bin/env python3
"""multiturn.py -- scenario S7 (docs/benchmarks.md): multi-turn chat against a running server.

--conversations chats of --turns turns each, every one opening with the same system prompt
of about --system-words words (one word is about one Llama-3 token; the prompt's real size
is reported from the server's usage). Each turn sends the whole conversation so far to
/v1/chat/completions (greedy, exactly --output-len new tokens: ignore_eos) and appends
the reply before the next user message (about --user-words words, different in every
chat). --clients threads run conversations side by side, each one turn at a time, as
users do; a conversation's turns are sequential.

Reports one JSON line: wall seconds, requests, prompt and output tokens (from usage),
output tok/s, requests/s, mean and p50/p99 turn latency, and the prefix-cache counters
read from /metrics before and after (vllm:prefix_cache_queries_total and _hits_total):
hit rate = hits / queries over this run. A turn that fails (HTTP error, short reply)
is counted in "failed" and the run's exit status is 1.
Python standard library only. Usage:
  multiturn.py --port P [--model NAME] [--conversations 200] [--turns 5]
               [--system-words 1000] [--user-words 60] [--output-len 64] [--clients 64]
               [--label TEXT]
"""
import argparse
import json
import random
import re
import sys
import threading
import time
import urllib.request

WORDS = ("time person year way day thing man world life hand part child eye woman place work "
         "week case point government company number group problem fact water room mother "
         "area money story month lot right study book job word business issue side kind head "
         "house service friend father power hour game line end member law car city community "
         "name president team minute idea kid body information back parent face others level "
         "office door health art war history party result change morning reason research girl "
         "guy moment air teacher force education light music river stone garden window paper "
         "table market letter field island ocean forest bridge engine signal corner winter").split()


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def metrics(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    out = {}
    for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        m = re.findall(r"^" + re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
        out[name] = sum(float(x) for x in m)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--system-words", type=int, default=1000)
    ap.add_argument("--user-words", type=int, default=60)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--label", default="")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    base = "http://%s:%d" % (a.host, a.port)
    if a.model is None:
        a.model = json.load(urllib.request.urlopen(base + "/v1/models", timeout=30))["data"][0]["id"]
    system = "You are a helpful assistant. " + words(random.Random(a.seed), a.system_words)

    lock = threading.Lock()
    next_conv = [0]
    lat, prompt_tok, out_tok, failed, errors = [], [0], [0], [0], []

    def turn(messages):
        body = json.dumps({"model": a.model, "messages": messages, "max_tokens": a.output_len,
                           "temperature": 0, "ignore_eos": True}).encode()
        req = urllib.request.Request(base + "/v1/chat/completions", body,
                                     {"content-type": "application/json"})
        t = time.time()
        r = json.load(urllib.request.urlopen(req, timeout=600))
        dt = time.time() - t
        u = r["usage"]
        if u["completion_tokens"] != a.output_len:
            raise RuntimeError("short reply: %d tokens" % u["completion_tokens"])
        return r["choices"][0]["message"]["content"], u, dt

    def client():
        while True:
            with lock:
                c = next_conv[0]
                next_conv[0] += 1
            if c >= a.conversations:
                return
            rng = random.Random(a.seed * 1000003 + c + 1)
            messages = [{"role": "system", "content": system}]
            for _ in range(a.turns):
                messages.append({"role": "user", "content": words(rng, a.user_words)})
                try:
                    reply, u, dt = turn(messages)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    with lock:
                        failed[0] += 1
                        if len(errors) < 5:
                            errors.append(str(e)[:200])
                    break
                messages.append({"role": "assistant", "content": reply})
                with lock:
                    lat.append(dt)
                    prompt_tok[0] += u["prompt_tokens"]
                    out_tok[0] += u["completion_tokens"]

    m0 = metrics(base)
    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(min(a.clients, a.conversations))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    m1 = metrics(base)
    q = m1["vllm:prefix_cache_queries_total"] - m0["vllm:prefix_cache_queries_total"]
    h = m1["vllm:prefix_cache_hits_total"] - m0["vllm:prefix_cache_hits_total"]
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    print(json.dumps({
        "label": a.label, "conversations": a.conversations, "turns": a.turns,
        "clients": a.clients, "system_words": a.system_words, "user_words": a.user_words,
        "output_len": a.output_len, "seconds": round(wall, 3), "requests": len(lat),
        "failed": failed[0], "errors": errors, "prompt_tokens": prompt_tok[0],
        "output_tokens": out_tok[0], "output_tok_s": round(out_tok[0] / wall, 1),
        "requests_s": round(len(lat) / wall, 2),
        "mean_latency_ms": round(sum(lat) / len(lat) * 1000, 1) if lat else None,
        "p50_latency_ms": pct(0.5), "p99_latency_ms": pct(0.99),
        "prefix_queries": int(q), "prefix_hits": int(h),
        "prefix_hit_rate": round(h / q, 4) if q > 0 else None}), flush=True)
    return 1 if failed[0] else 0


if __name__ == "__main__":
    sys.exit(main())
