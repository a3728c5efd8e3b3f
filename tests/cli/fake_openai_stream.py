#!/usr/bin/env python3
"""fake_openai_stream.py PORT_FILE -- a loopback OpenAI-style server for `pagellm bench
serve` tests: GET /v1/models names one model; POST /v1/completions streams SSE. Request
k (in arrival order) ends by rule k % 4: 0 and 2 -> all max_tokens tokens, finish
"length"; 1 -> "abort" after 2 tokens; 3 -> "length" after 3 tokens (short). Usage comes
in a final chunk. The port chosen by the OS is written to PORT_FILE."""
import itertools
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counter = itertools.count()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            k = next(counter)
        want = req["max_tokens"]
        n, finish = {0: (want, "length"), 1: (2, "abort"), 2: (want, "length"),
                     3: (3, "length")}[k % 4]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        for i in range(n):
            event({"choices": [{"index": 0, "text": "t%d " % i,
                                "finish_reason": finish if i == n - 1 else None}]})
        event({"choices": [], "usage": {"prompt_tokens": len(req["prompt"]),
                                        "completion_tokens": n}})
        self.wfile.write(b"data: [DONE]\n\n")


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    srv.serve_forever()


if __name__ == "__main__":
    main()
