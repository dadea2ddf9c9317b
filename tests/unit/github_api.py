"""A stand-in for GitHub's REST API on loopback, for the forge client's tests: one repository's
deploy keys, branches and pull requests, and the SSH keys of the users whose tokens it knows,
answered with the status codes and JSON fields GitHub's REST documentation gives for these
endpoints (docs.github.com/rest: deploy-keys, branches, pulls, users/keys, users; apps
"Create an installation access token" and installation "Revoke an installation access token"),
written from those documented examples, not recorded from github.com. An installation token it
minted is taken on the repository's endpoints for its hour, as far as its permissions reach
(GitHub's "Resource not accessible by integration" beyond them). It keeps every request it was
sent, so tests check headers and bodies.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TOKEN = "github_pat_11AAAAAAA0unitTestTokenNotReal"  # octocat's: an admin of the repository
BOT_TOKEN = "github_pat_11BBBBBBB0unitTestBotTokenNotReal"  # octo-bot's: a machine user


@dataclass
class Sent:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class GitHubApi:
    """The state of repository `owner/name` as GitHub would report it to the holder of TOKEN (or
    of another token in `users`: the user's own SSH keys, and whether it may push)."""

    repository: str = "octo-org/app"
    admin: bool = True
    users: dict[str, str] = field(default_factory=lambda: {TOKEN: "octocat", BOT_TOKEN: "octo-bot"})
    pushers: set[str] = field(default_factory=lambda: {"octocat", "octo-bot"})
    user_keys: dict[int, dict[str, Any]] = field(default_factory=dict)  # each with its owner's login
    keys: dict[int, dict[str, Any]] = field(default_factory=dict)
    branches: set[str] = field(default_factory=lambda: {"main"})
    pulls: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    next_id: int = 64000001
    server: Optional[ThreadingHTTPServer] = None
    # A GitHub App: its id, the public half of its key (PEM; None: no App), its installation on the
    # repository and what that installation was granted; the tokens it minted, by token.
    app_id: int = 123456
    app_public_key: Optional[str] = None
    installation: int = 7654321
    installation_repositories: set[str] = field(default_factory=lambda: {"app"})
    installation_permissions: dict[str, str] = field(default_factory=lambda: {
        "contents": "write", "pull_requests": "write", "metadata": "read", "administration": "write"})
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # live ones: a revoked token leaves
    minted: list[str] = field(default_factory=list)  # every token it ever minted, revoked or not
    token_lifetime: int = 3600  # seconds, as GitHub's
    clock: Any = time.time

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "GitHubApi":
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                api.sent.append(Sent(self.command, parts.path, parse_qs(parts.query),
                                     {key.lower(): value for key, value in self.headers.items()}, body))
                status, answer = api.route(self.command, parts.path, parse_qs(parts.query), self.headers, body)
                raw = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def route(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
              body: Any) -> tuple[int, Any]:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if path.startswith("/app/") or path == "/installation/token":
            return self._app(method, path, token if scheme == "Bearer" else "", body)
        granted = self._installation(token) if scheme == "Bearer" else None
        login = self.users.get(token) if scheme == "Bearer" else None
        if granted is not None:
            login = "octo-app[bot]"
        if login is None:
            return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                         "status": "401"}
        repo = f"/repos/{self.repository}"
        if granted is not None and _integration_denied(granted, method, path[len(repo):] if path.startswith(repo)
                                                       else path):
            return 403, {"message": "Resource not accessible by integration",
                         "documentation_url": "https://docs.github.com/rest", "status": "403"}
        if path == "/user" or path.startswith("/user/"):
            return self._user(login, method, path, body)
        admin = self.admin and token == TOKEN
        if path == repo and method == "GET":
            return 200, {"id": 1296269, "full_name": self.repository, "default_branch": "main", "private": True,
                         "permissions": {"admin": admin, "maintain": admin, "push": login in self.pushers,
                                         "pull": True}}
        if not path.startswith(repo + "/"):
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
        rest = path[len(repo):]
        if rest == "/keys" and method == "POST":
            if not admin:
                return 403, {"message": "Resource not accessible by personal access token", "status": "403"}
            if any(key["key"] == body["key"] for key in self.keys.values()):
                return 422, {"message": "Validation Failed", "errors": [
                    {"resource": "PublicKey", "code": "custom", "field": "key", "message": "key is already in use"}],
                    "status": "422"}
            key = {"id": self.next_id, "key": body["key"], "url": f"https://api.github.com{repo}/keys/{self.next_id}",
                   "title": body["title"], "verified": True, "created_at": "2026-12-06T17:00:00Z",
                   "read_only": body["read_only"], "added_by": "octocat", "last_used": None, "enabled": True}
            self.keys[self.next_id] = key
            self.next_id += 1
            return 201, key
        if rest == "/keys" and method == "GET":
            return 200, self._page(list(self.keys.values()), query)
        match = re.fullmatch(r"/keys/(\d+)", rest)
        if match and int(match.group(1)) in self.keys:
            if method == "DELETE":
                del self.keys[int(match.group(1))]
                return 204, None
            return 200, self.keys[int(match.group(1))]
        match = re.fullmatch(r"/branches/(.+)", rest)
        if match and method == "GET":
            name = match.group(1)
            return (200, {"name": name, "protected": False}) if name in self.branches else \
                (404, {"message": "Branch not found", "status": "404"})
        if rest == "/pulls" and method == "GET":
            state = query.get("state", ["open"])[0]
            return 200, self._page([p for p in self.pulls if p["state"] == state], query)
        if rest == "/pulls" and method == "POST":
            if body["head"] not in self.branches:
                return 422, {"message": "Validation Failed", "errors": [
                    {"resource": "PullRequest", "field": "head", "code": "invalid"}], "status": "422"}
            if body["head"] == "empty":
                return 422, {"message": "Validation Failed", "errors": [
                    {"resource": "PullRequest", "code": "custom", "message": f"No commits between main and {body['head']}"}],
                    "status": "422"}
            number = len(self.pulls) + 1
            pull = {"number": number, "state": "open", "title": body["title"], "body": body["body"],
                    "html_url": f"https://github.com/{self.repository}/pull/{number}",
                    "head": {"ref": body["head"], "label": f"octo-org:{body['head']}"},
                    "base": {"ref": body["base"], "label": f"octo-org:{body['base']}"}}
            self.pulls.append(pull)
            return 201, pull
        return 404, {"message": "Not Found", "status": "404"}

    def _user(self, login: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        """`/user` and the user's own SSH keys (`/user/keys`): another user's key is not found."""
        if path == "/user" and method == "GET":
            return 200, {"login": login, "id": 583231, "type": "User", "site_admin": False}
        if path == "/user/keys" and method == "POST":
            if any(key["key"] == body["key"] for key in [*self.keys.values(), *self.user_keys.values()]):
                return 422, {"message": "Validation Failed", "errors": [
                    {"resource": "PublicKey", "code": "custom", "field": "key", "message": "key is already in use"}],
                    "status": "422"}
            key = {"id": self.next_id, "key": body["key"], "url": f"https://api.github.com/user/keys/{self.next_id}",
                   "title": body["title"], "verified": True, "created_at": "2026-12-06T17:00:00Z", "read_only": False,
                   "owner": login}
            self.user_keys[self.next_id] = key
            self.next_id += 1
            return 201, {k: v for k, v in key.items() if k != "owner"}
        match = re.fullmatch(r"/user/keys/(\d+)", path)
        key = self.user_keys.get(int(match.group(1))) if match else None
        if key is not None and key["owner"] == login:
            if method == "DELETE":
                del self.user_keys[key["id"]]
                return 204, None
            return 200, {k: v for k, v in key.items() if k != "owner"}
        return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}

    def _app(self, method: str, path: str, token: str, body: Any) -> tuple[int, Any]:
        """Minting an installation token with the App's JWT, which is verified as GitHub does (the
        App's public key, `iss`, `iat`/`exp` within ten minutes); revoking one with itself."""
        if path == "/installation/token" and method == "DELETE":
            return (204, None) if self.tokens.pop(token, None) else (401, {"message": "Bad credentials", "status": "401"})
        match = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if not match or method != "POST":
            return 404, {"message": "Not Found", "status": "404"}
        problem = self._jwt_problem(token)
        if problem:
            return 401, {"message": problem, "documentation_url": "https://docs.github.com/rest", "status": "401"}
        if int(match.group(1)) != self.installation:
            return 404, {"message": "Not Found", "status": "404"}
        repositories = (body or {}).get("repositories", [])
        if not set(repositories) <= self.installation_repositories:
            return 422, {"message": "There is at least one repository that does not exist or is not accessible to "
                         "the parent installation.", "status": "422"}
        permissions = (body or {}).get("permissions", self.installation_permissions)
        if any(self.installation_permissions.get(name) not in (level, "write") for name, level in permissions.items()):
            return 422, {"message": "The permissions requested are not granted to this installation.", "status": "422"}
        token = f"ghs_unitTestInstallationToken{len(self.minted):08d}"
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock() + self.token_lifetime))
        self.tokens[token] = {"expires_at": expires, "repositories": repositories, "permissions": permissions}
        self.minted.append(token)
        owner = self.repository.split("/")[0]
        return 201, {"token": token, "expires_at": expires, "permissions": permissions,
                     "repository_selection": "selected",
                     "repositories": [{"name": name, "full_name": f"{owner}/{name}"} for name in repositories]}

    def _installation(self, token: str) -> Optional[dict[str, str]]:
        """The permissions of a live installation token on the repository (None: not one)."""
        minted = self.tokens.get(token)
        if minted is None or self.repository.split("/")[1] not in minted["repositories"]:
            return None
        expires = calendar.timegm(time.strptime(minted["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        return minted["permissions"] if expires > self.clock() else None

    def _jwt_problem(self, jwt: str) -> Optional[str]:
        if self.app_public_key is None:
            return "Integration not found"
        try:
            header, claims, signature = jwt.split(".")
            key = serialization.load_pem_public_key(self.app_public_key.encode())
            key.verify(_unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
            fields = json.loads(_unb64(claims))
            if json.loads(_unb64(header)).get("alg") != "RS256":
                raise ValueError
        except (ValueError, InvalidSignature):
            return "A JSON web token could not be decoded"
        now = self.clock()
        if str(fields.get("iss")) != str(self.app_id):
            return "Integration not found"
        if not isinstance(fields.get("exp"), int) or fields["exp"] <= now or fields["exp"] - now > 600:
            return ("'Expiration time' claim ('exp') must be a numeric value representing the future time at "
                    "which the assertion expires")
        if not isinstance(fields.get("iat"), int) or fields["iat"] > now + 60 or fields["exp"] - fields["iat"] > 660:
            return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
        return None

    @staticmethod
    def _page(items: list[Any], query: dict[str, list[str]]) -> list[Any]:
        size = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        return items[(page - 1) * size:page * size]


def app_key_pair() -> tuple[str, str]:
    """A GitHub App's private key (PEM, as GitHub hands it out) and its public half (PEM), generated."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _integration_denied(granted: dict[str, str], method: str, rest: str) -> bool:
    """Whether an installation token with `granted` may not make this call on the repository (`rest`:
    the path after /repos/{owner}/{name}; every token may read the repository and its branches)."""
    if rest.startswith("/pulls"):
        return granted.get("pull_requests") not in (("read", "write") if method == "GET" else ("write",))
    return not (rest == "" or rest.startswith("/branches/")) or method != "GET"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
