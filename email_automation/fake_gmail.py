"""A fake Gmail API on loopback, for tests and the offline demo (never for production).

It speaks the part of Gmail's REST API the sync uses — messages.list (pagination, ``q`` ignored
except ``newer_than``), messages.get (metadata), history.list, users.getProfile — plus an OAuth
token endpoint, over real HTTP on 127.0.0.1. Tests script failures (401, 429 with Retry-After,
500) and slowness, and add messages between syncs.

    server = FakeGmail.start(messages=25)
    ... GMAIL_API_BASE_URL=server.base_url, GMAIL_TOKEN_URL=server.token_url ...
    server.stop()
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/gmail/v1/users/me"


class FakeGmail:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.history_id = 1000
        self.history: list[tuple[int, str]] = []  # (history id, message id added)
        self.valid_tokens = {"demo-access-token"}
        self.refresh_token = "demo-refresh-token"
        self.failures: deque[tuple[str, int, dict[str, str]]] = deque()
        self.delay = 0.0
        self.requests: list[str] = []
        self.queries: list[tuple[str, dict[str, list[str]]]] = []  # (path, query) of every request
        self.token_refreshes = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- control ----------------------------------------------------------------------------
    @classmethod
    def start(cls, messages: int = 0) -> FakeGmail:
        fake = cls()
        fake.add_messages(messages)
        handler = type("Handler", (_Handler,), {"fake": fake})
        fake._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        fake._server.daemon_threads = True
        threading.Thread(target=fake._server.serve_forever, daemon=True).start()
        return fake

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_messages(self, count: int) -> list[str]:
        ids = []
        with self._lock:
            for _ in range(count):
                number = len(self.messages) + 1
                self.history_id += 1
                message_id = f"msg{number:05d}"
                self.messages.append({
                    "id": message_id, "threadId": f"thr{number:05d}", "historyId": str(self.history_id),
                    "internalDate": str(int((time.time() - number) * 1000)),
                    "snippet": f"Message {number} about {'pricing for your team' if number % 3 == 0 else 'our meeting'}",
                    "payload": {"headers": [
                        {"name": "Subject", "value": f"{'Quote request' if number % 3 == 0 else 'Hello'} #{number}"},
                        {"name": "From", "value": f"sender{number}@example.com"},
                        {"name": "Date", "value": time.strftime("%a, %d %b %Y %H:%M:%S +0000")}]}})
                self.history.append((self.history_id, message_id))
                ids.append(message_id)
        return ids

    def fail_next(self, path_fragment: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """The next ``times`` requests whose path contains ``path_fragment`` answer ``status``."""
        for _ in range(times):
            self.failures.append((path_fragment, status, headers or {}))

    def expire_access_tokens(self) -> None:
        self.valid_tokens.clear()

    # --- serving ----------------------------------------------------------------------------
    def _scripted_failure(self, path: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            for index, (fragment, status, headers) in enumerate(self.failures):
                if fragment in path:
                    del self.failures[index]
                    return status, headers
        return None

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, list[str]],
               auth: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.requests.append(f"{method} {path}")
        self.queries.append((path, query))
        if self.delay:
            time.sleep(self.delay)
        failure = self._scripted_failure(path)
        if failure:
            return failure[0], {"error": {"code": failure[0], "message": "scripted failure"}}, failure[1]
        if path == "/token" and method == "POST":
            if body.get("refresh_token", [""])[0] != self.refresh_token:
                return 400, {"error": "invalid_grant"}, {}
            with self._lock:
                self.token_refreshes += 1
                token = f"access-{self.token_refreshes}"
                self.valid_tokens.add(token)
            return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}, {}
        if not path.startswith(PREFIX):
            return 404, {"error": {"code": 404, "message": f"no route {path}"}}, {}
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return 401, {"error": {"code": 401, "message": "Invalid Credentials"}}, {}
        rest = path[len(PREFIX):]
        if rest == "/profile":
            return 200, {"emailAddress": "demo@example.com", "historyId": str(self.history_id)}, {}
        if rest == "/messages":
            return 200, self._list(query), {}
        if rest.startswith("/messages/"):
            message_id = rest.split("/")[2]
            for message in self.messages:
                if message["id"] == message_id:
                    return 200, message, {}
            return 404, {"error": {"code": 404, "message": "Requested entity was not found."}}, {}
        if rest == "/history":
            start = int(query.get("startHistoryId", ["0"])[0])
            added = [{"id": str(h), "messagesAdded": [{"message": {"id": m}}]} for h, m in self.history if h > start]
            return 200, {"history": added, "historyId": str(self.history_id)}, {}
        return 404, {"error": {"code": 404, "message": f"no route {path}"}}, {}

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("maxResults", ["100"])[0])
        offset = int(query.get("pageToken", ["0"])[0] or 0)
        ordered = list(reversed(self.messages))  # newest first, like Gmail
        page = ordered[offset:offset + size]
        result: dict[str, Any] = {"messages": [{"id": m["id"], "threadId": m["threadId"]} for m in page],
                                  "resultSizeEstimate": len(ordered)}
        if offset + size < len(ordered):
            result["nextPageToken"] = str(offset + size)
        return result


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGmail

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = parse_qs(self.rfile.read(length).decode()) if length else {}
        status, payload, headers = self.fake.handle(method, url.path, parse_qs(url.query), body,
                                                    self.headers.get("Authorization", ""))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return
