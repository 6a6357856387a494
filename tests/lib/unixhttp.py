"""Raw HTTP over a Unix socket with the standard library only."""

from __future__ import annotations

import http.client
import json as _json
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._unix_path)
        self.sock = s


class Response:
    """status, headers (case-insensitive http.client.HTTPMessage), body bytes.
    Unpacks as a tuple: ``status, headers, body = api(...)``."""

    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def json(self):
        return _json.loads(self.body)

    def json_lines(self):
        """A JSON message stream (pull/push progress): one object per line."""
        out = []
        for line in self.body.splitlines():
            line = line.strip()
            if line:
                out.append(_json.loads(line))
        return out

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


def request(sock_path: str, method: str, path: str, body=None, json=None,
            headers=None, timeout: float = 60) -> Response:
    headers = dict(headers or {})
    if json is not None:
        body = _json.dumps(json).encode()
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = UnixHTTPConnection(sock_path, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.headers, data)
    finally:
        conn.close()


def stream(sock_path: str, method: str, path: str, body=None, headers=None,
           timeout: float = 60):
    """Open a request and return (conn, response) for reading a stream line
    by line (resp.readline()).  The caller closes conn."""
    conn = UnixHTTPConnection(sock_path, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    return conn, conn.getresponse()
