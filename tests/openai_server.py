"""A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol, scripted per
request: each behaviour is popped from a queue ("ok", "429", "500", "401", "malformed",
"empty", "slow"); when the queue is empty it answers "ok". As a vision model: `answer(body)` gives
the reply per request (it sees the image parts), `logprobs(body)` the first token's top
alternatives as (token, logprob) pairs, and `refuse_logprobs` answers 400 to a logprobs request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self, reply="A misty waterfall in a jungle, golden light", slow_s=3.0):
        self.behaviours: list[str] = []
        self.requests: list[dict] = []
        self.reply = reply
        self.slow_s = slow_s
        self.refuse_format = False  # answer 400 to a request with response_format, as a server without it does
        self.refuse_logprobs = False
        self.answer = None  # body -> reply text
        self.logprobs = None  # body -> [(token, logprob), ...]
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
                    what = outer.behaviours.pop(0) if outer.behaviours else "ok"
                if outer.refuse_format and "response_format" in body:
                    return self._send(400, {"error": {"message": "'response_format' is not supported by this model"}})
                if outer.refuse_logprobs and body.get("logprobs"):
                    return self._send(400, {"error": {"message": "logprobs are not supported"}})
                if what == "slow":
                    time.sleep(outer.slow_s)
                    what = "ok"
                if what == "ok":
                    choice = {"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": outer.answer(body) if outer.answer else outer.reply}}
                    if body.get("logprobs") and outer.logprobs:
                        top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in outer.logprobs(body)]
                        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
                    return self._send(200, {
                        "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                        "choices": [choice],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                    })
                if what == "429":
                    return self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0"})
                if what == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if what in ("401", "403", "404"):
                    return self._send(int(what), {"error": {"message": "no", "code": what}})
                if what == "quota":
                    return self._send(429, {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}})
                if what == "malformed":
                    data = b"{not json"
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if what == "empty":
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []})
                raise AssertionError(what)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
