#!/usr/bin/env python3
"""Docker Hub's bearer-token flow in front of a plain registry, for the pull tests:
tokens.py LISTEN_PORT REGISTRY_PORT. /v2/ answers 401 with a Bearer challenge naming
/token; /token issues a token for a repository's pull scope: anonymously for any
repository but those under private/, which need Basic alice:secret. Requests with a
valid token for their repository are passed to the registry. Prints "ready"; ends when
its stdin closes. Loopback only."""
import base64
import http.client
import http.server
import sys
import threading
import urllib.parse

PRIVATE_USER = "alice:secret"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def challenge(self, scope=""):
        port = self.server.server_address[1]
        value = f'Bearer realm="http://127.0.0.1:{port}/token",service="test-registry"'
        if scope:
            value += f',scope="{scope}"'
        self.send_response(401)
        self.send_header("WWW-Authenticate", value)
        self.send_header("Content-Type", "application/json")
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def token(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        scope = (query.get("scope") or [""])[0]
        repo = scope.split(":")[1] if scope.count(":") >= 2 else ""
        if repo.startswith("private/"):
            auth = self.headers.get("Authorization", "")
            given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
            if given != PRIVATE_USER:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        body = ('{"token":"tok-%s","expires_in":300}' % repo).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self):
        path = urllib.parse.urlparse(self.path).path
        if path.startswith("/token"):
            return self.token()
        parts = path.split("/")
        repo = "/".join(parts[2:-2]) if len(parts) > 4 else ""
        auth = self.headers.get("Authorization", "")
        if path.rstrip("/") == "/v2" or not repo:
            if not auth.startswith("Bearer "):
                return self.challenge()
        elif auth != f"Bearer tok-{repo}":
            return self.challenge(f"repository:{repo}:pull")
        conn = http.client.HTTPConnection("127.0.0.1", self.server.registry, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
        conn.request(self.command, self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-type", "docker-content-digest", "content-range", "accept-ranges"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(body))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        conn.close()

    do_GET = forward
    do_HEAD = forward


def main():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.registry = int(sys.argv[2])
    print("ready", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), srv.shutdown()), daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
