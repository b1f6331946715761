"""Loopback protocol peers for domain tests: an SMTP server (aiosmtpd), an OpenAI-compatible
chat-completions server and a webhook receiver, all real servers on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers import free_port


class SmtpPeer:
    """Collects every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's API
        self.messages.append({"to": envelope.rcpt_tos, "data": envelope.content.decode(errors="replace")})
        return "250 Message accepted for delivery"

    def start(self) -> SmtpPeer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class JsonHttpPeer:
    """A tiny JSON HTTP server: records requests, answers from a script or a default handler."""

    def __init__(self, default: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: deque[tuple[int, dict[str, str], Any]] = deque()
        self.default = default
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                peer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, headers, payload = peer.script.popleft() if peer.script else (200, {}, peer.default(body))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chat_completions_peer() -> JsonHttpPeer:
    """Answers like an OpenAI-compatible API: 'support' for classification, an echo otherwise."""

    def reply(body: Any) -> Any:
        system = body["messages"][0]["content"]
        content = "support" if "Classify" in system else f"remote answer to: {body['messages'][-1]['content']}"
        return {"id": "c1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

    return JsonHttpPeer(reply)
