"""A small typed client of a forge's REST API: deploy keys, users' SSH keys, branches and pull requests.

Why one client for GitHub and Gitea: Gitea's `/api/v1` follows GitHub's REST shape for these
endpoints (the same paths under the repository, the same JSON fields), so only the address and
the authorization header differ. The provider (deploy keys as resources) and the CLI (`agentfleet
pr`) both use it. The token travels in the Authorization header only: it is never part of a URL,
an error message or a log line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

from agentfleet import __version__
from agentfleet.errors import AgentfleetError

FORGE_KINDS = ("github", "gitea")
GITHUB_API = "https://api.github.com"
TIMEOUT = 30.0
PAGE = 50  # Gitea's largest page by default (GitHub allows 100)


class ForgeError(AgentfleetError):
    """The forge refused or could not be reached; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Forge:
    """Where a repository lives on a forge. `token` is an API token (kept out of repr)."""

    kind: str  # one of FORGE_KINDS
    api: str  # e.g. https://api.github.com, http://127.0.0.1:3000/api/v1
    repository: str  # owner/name
    token: str = field(repr=False)

    def authorization(self) -> str:
        return f"Bearer {self.token}" if self.kind == "github" else f"token {self.token}"


@dataclass(frozen=True)
class Repository:
    full_name: str
    default_branch: str
    admin: bool  # whether the token may manage deploy keys
    push: bool = False  # whether the token's user may push to it


@dataclass(frozen=True)
class DeployKey:
    id: int
    title: str
    key: str  # "ssh-ed25519 AAAA…" (forges drop the comment)
    read_only: bool


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # the page a person opens
    head: str
    base: str
    title: str
    state: str


def key_body(public_key: str) -> str:
    """`type base64` of an OpenSSH public key, without the comment a forge drops."""
    return " ".join(public_key.split()[:2])


# What a person does about each refusal, by HTTP status ({field}: the config field naming the token).
HINTS = {
    401: "the token is not valid (expired or revoked): set a new one with `pulumi config set --secret <{field} key>`",
    403: "the token lacks a permission: deploy keys need admin rights on the repository (GitHub: a fine-grained "
         "token with Administration and Pull requests: write, or a classic token with `repo`; Gitea: scope "
         "write:repository from an owner or admin of the repository)",
    404: "no such repository (or the token cannot see it): check forge.repository and the token's owner",
}
# A user's own SSH keys (`/user/keys`) need a scope of their own.
USER_KEY_HINTS = {
    **HINTS,
    403: "the token may not manage its user's SSH keys (GitHub: a fine-grained token with Git SSH keys: write, "
         "or a classic token with admin:public_key; Gitea: scope write:user)",
}


class ForgeClient:
    """The REST calls agentfleet makes on one repository."""

    def __init__(self, forge: Forge, timeout: float = TIMEOUT, token_field: str = "forge.token") -> None:
        self.forge = forge
        self.timeout = timeout
        self.token_field = token_field  # where the token came from, for the hint on a 401
        self._repo = "/repos/" + "/".join(urllib.parse.quote(part, safe="") for part in forge.repository.split("/"))

    def _call(self, method: str, path: str, body: Optional[dict[str, Any]] = None,
              query: Optional[dict[str, Any]] = None) -> tuple[int, Any]:
        url = self.forge.api.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", self.forge.authorization())
        request.add_header("Accept", "application/vnd.github+json" if self.forge.kind == "github" else "application/json")
        request.add_header("User-Agent", f"agentfleet/{__version__}")
        if self.forge.kind == "github":
            request.add_header("X-GitHub-Api-Version", "2022-11-28")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ForgeError(f"cannot reach the {self.forge.kind} API at {self.forge.api} ({reason}); "
                             "check forge.api and that the forge is up") from None

    def _expect(self, what: str, status: int, answer: Any, *ok: int, mine: bool = False,
                hints: Optional[dict[int, str]] = None) -> Any:
        """The answer when its status is one of `ok`, else the error; `mine`: a call on the token's
        user (its SSH keys), not on the repository; `hints`: the caller's own (it says what to do)."""
        if status in ok:
            return answer
        said = answer.get("message") if isinstance(answer, dict) else None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if isinstance(errors, list) and errors:
            said = f"{said}: {'; '.join(str(e.get('message', e) if isinstance(e, dict) else e) for e in errors)}"
        hint = (hints if hints is not None else USER_KEY_HINTS if mine else HINTS).get(status, "").format(
            field=self.token_field)
        where = "" if mine else f" on {self.forge.repository}"
        raise ForgeError(f"{self.forge.kind} refused to {what}{where} (HTTP {status}"
                         f"{f': {said}' if said else ''}){f'; {hint}' if hint else ''}", status)

    def repository(self) -> Repository:
        answer = self._expect("read the repository", *self._call("GET", self._repo), 200)
        permissions = answer.get("permissions") or {}
        return Repository(answer["full_name"], answer["default_branch"], bool(permissions.get("admin")),
                          bool(permissions.get("push")))

    def login(self) -> str:
        """The user the token belongs to."""
        return str(self._expect("read the token's user", *self._call("GET", "/user"), 200, mine=True)["login"])

    def add_deploy_key(self, title: str, public_key: str, read_only: bool = False) -> DeployKey:
        body = {"title": title, "key": key_body(public_key), "read_only": read_only}
        return _deploy_key(self._expect(f"add the deploy key {title!r}",
                                        *self._call("POST", f"{self._repo}/keys", body), 201))

    def deploy_key(self, key_id: int) -> Optional[DeployKey]:
        """The key, or None when the forge no longer has it."""
        status, answer = self._call("GET", f"{self._repo}/keys/{int(key_id)}")
        if status == 404 and self._repository_exists():
            return None
        return _deploy_key(self._expect(f"read the deploy key {key_id}", status, answer, 200))

    def add_user_key(self, title: str, public_key: str) -> DeployKey:
        """Registers the key as an SSH key of the token's user: what it pushes, the forge shows as that user's."""
        body = {"title": title, "key": key_body(public_key)}
        return _deploy_key(self._expect(f"add the user's SSH key {title!r}", *self._call("POST", "/user/keys", body),
                                        201, mine=True))

    def user_key(self, key_id: int) -> Optional[DeployKey]:
        """The token's user's key, or None when the forge no longer has it."""
        status, answer = self._call("GET", f"/user/keys/{int(key_id)}")
        if status == 404 and self.login():  # a valid token: the key is gone
            return None
        return _deploy_key(self._expect(f"read the user's SSH key {key_id}", status, answer, 200, mine=True))

    def delete_user_key(self, key_id: int) -> None:
        """Removes the token's user's key; a key already gone is fine."""
        status, answer = self._call("DELETE", f"/user/keys/{int(key_id)}")
        if status == 404 and self.login():
            return
        self._expect(f"delete the user's SSH key {key_id}", status, answer, 204, mine=True)

    def deploy_keys(self) -> list[DeployKey]:
        return [_deploy_key(item) for item in self._pages("list the deploy keys", f"{self._repo}/keys", {})]

    def delete_deploy_key(self, key_id: int) -> None:
        """Removes the key; a key already gone is fine."""
        status, answer = self._call("DELETE", f"{self._repo}/keys/{int(key_id)}")
        if status == 404 and self._repository_exists():
            return
        self._expect(f"delete the deploy key {key_id}", status, answer, 204)

    def branch_exists(self, branch: str) -> bool:
        status, answer = self._call("GET", f"{self._repo}/branches/{urllib.parse.quote(branch, safe='/')}")
        if status == 404:
            return False
        self._expect(f"read the branch {branch}", status, answer, 200)
        return True

    def open_pulls(self) -> list[PullRequest]:
        return [_pull(item) for item in self._pages("list the pull requests", f"{self._repo}/pulls", {"state": "open"})]

    def create_pull(self, head: str, base: str, title: str, body: str) -> PullRequest:
        answer = self._call("POST", f"{self._repo}/pulls", {"head": head, "base": base, "title": title, "body": body})
        return _pull(self._expect(f"open a pull request from {head} to {base}", *answer, 201))

    def mint_installation_token(self, installation: int, repository: str, permissions: dict[str, str]) -> dict[str, Any]:
        """GitHub: an installation token for one repository (its name, without the owner) and these
        permissions; the client's token must be the App's JWT. The caller explains refusals."""
        body = {"repositories": [repository], "permissions": permissions}
        path = f"/app/installations/{int(installation)}/access_tokens"
        return self._expect("mint an installation token", *self._call("POST", path, body), 201, mine=True, hints={})

    def revoke_installation_token(self) -> None:
        """GitHub: ends the client's own installation token; one already gone (401) is fine."""
        status, answer = self._call("DELETE", "/installation/token")
        if status != 401:
            self._expect("revoke an installation token", status, answer, 204, mine=True, hints={})

    def _repository_exists(self) -> bool:
        """Tells a missing key (the repository is there) from a missing repository (an error)."""
        self.repository()
        return True

    def _pages(self, what: str, path: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            # GitHub reads per_page, Gitea limit; each ignores the other.
            answer = self._expect(what, *self._call("GET", path, query={**query, "per_page": PAGE, "limit": PAGE,
                                                                          "page": page}), 200)
            items.extend(answer)
            if len(answer) < PAGE:
                return items
            page += 1


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}


def _deploy_key(answer: dict[str, Any]) -> DeployKey:
    # Gitea leaves read_only out when false; a user's key has none on older GitHub answers.
    return DeployKey(int(answer["id"]), answer["title"], key_body(answer["key"]), bool(answer.get("read_only")))


def _pull(answer: dict[str, Any]) -> PullRequest:
    return PullRequest(int(answer["number"]), answer["html_url"], answer["head"]["ref"], answer["base"]["ref"],
                       answer["title"], answer["state"])
