"""An HTTPS git server the tests control, run in a container of the agent image: git's smart HTTP
(git-http-backend as CGI) behind Basic authentication that accepts `x-access-token:<token>` for
the tokens in /srv/tokens (one a line, read again for every request, so a test rotates a token by
rewriting the file). TLS with a self-signed certificate (/srv/tls/cert.pem, made by openssl at
start) that the test installs into the agent as a trusted CA.

usage: python3 https_git_server.py   (serves /srv/git on port 443)
"""

from __future__ import annotations

import base64
import http.server
import os
import socket
import ssl
import subprocess

ROOT = "/srv/git"
TOKENS = "/srv/tokens"


class Handler(http.server.BaseHTTPRequestHandler):
    def authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        with open(TOKENS, encoding="utf-8") as file:
            return user == "x-access-token" and token in file.read().split()

    def serve(self) -> None:
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": ROOT, "GIT_HTTP_EXPORT_ALL": "1",
               "REMOTE_USER": "x-access-token", "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_HTTP_MAX_REQUEST_BUFFER": "100M"}
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(separator)
        headers = [line.strip().split(": ", 1) for line in head.decode().splitlines() if ": " in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = serve


if __name__ == "__main__":
    os.makedirs("/srv/tls", exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=forge",
                    "-addext", f"subjectAltName=IP:{socket.gethostbyname(socket.gethostname())}",
                    "-keyout", "/srv/tls/key.pem", "-out", "/srv/tls/cert.pem"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain("/srv/tls/cert.pem", "/srv/tls/key.pem")
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    open("/srv/ready", "w").close()
    server.serve_forever()
