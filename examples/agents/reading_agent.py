#!/usr/bin/env python3
"""A baton agent in Python, standard library only.

baton's `http` agent kind POSTs each step to `{url}/{action}` with the JSON
body {planId, stepId, action, input, dependencies, attempt} and expects
{"data": ..., "insights": [{"type": ..., "data": ...}]} back. Status codes
tell baton what to do on failure: 429 and 5xx are retried under the step's
retry policy, other 4xx fail the step for good.

This one scores how hard a passage is to read (Flesch reading ease) and
reports a `reading_too_hard` insight when it is above the learner's level.

    python3 examples/agents/reading_agent.py [PORT]   # default 8091
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def syllables(word):
    groups = re.findall(r"[aeiouy]+", word.lower())
    count = len(groups)
    if word.lower().endswith("e") and count > 1:
        count -= 1
    return max(count, 1)


def reading_ease(text):
    sentences = max(len(re.findall(r"[.!?]+", text)), 1)
    words = re.findall(r"[A-Za-z']+", text)
    if not words:
        raise ValueError("the text has no words")
    syl = sum(syllables(w) for w in words)
    return 206.835 - 1.015 * (len(words) / sentences) - 84.6 * (syl / len(words))


def analyze(step):
    given = step.get("input") or {}
    text = given.get("text")
    if not isinstance(text, str):
        return 400, {"error": "input.text must be a string"}
    try:
        score = round(reading_ease(text), 1)
    except ValueError as e:
        return 400, {"error": str(e)}
    # Flesch ease: 90+ very easy (grade 5), 60-70 plain English, <30 hard.
    level = given.get("minEase", 60)
    answer = {"data": {"readingEase": score, "words": len(text.split())}}
    if score < level:
        answer["insights"] = [
            {"type": "reading_too_hard", "data": {"readingEase": score, "minEase": level}}
        ]
    return 200, answer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            step = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return self.reply(400, {"error": "the body is not JSON"})
        if self.path.rstrip("/") == "/analyze":
            return self.reply(*analyze(step))
        self.reply(404, {"error": f"no action {self.path}"})

    def reply(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"reading agent on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
