"""Parsers of single values (sizes, hosts, remote URLs, git identities, branches, allow entries):
each accepts only what git, ssh and the engines read exactly as written, and says why not."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Any, Optional

from agentfleet.sshkeys import load_private_key
from components.spec.model import Destination, Remote

# Every pattern is used with fullmatch: `$` would also accept a trailing newline.
AGENT_NAME = re.compile(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?")
DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# user@domain: a dot-atom local part (RFC 5322, and any non-ASCII letter: RFC 6531), a domain of
# two or more labels. Leaves out quoted local parts and `"`, `;`, `<`, `>`, which git mangles.
_LOCAL_CHAR = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])"
_DOMAIN_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
EMAIL = re.compile(rf"{_LOCAL_CHAR}+(?:\.{_LOCAL_CHAR}+)*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
MEMORY = re.compile(r"(\d+)\s*(m|mb|mib|g|gb|gib)?", re.IGNORECASE)
HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
URL_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~+-]*")
# git's scp-like form: [user@]host:path, a colon before any slash.
SCP_REMOTE = re.compile(r"(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*):(?P<path>.*)")
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # git's is_url(); else scp form or a path
URL_REMOTE = re.compile(r"[^:/]*://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*)(?::(?P<port>\d{1,5}))?(?P<path>/.*|)")
# `name::address` makes git run git-remote-<name> (ext:: runs any command, fd:: reads a descriptor).
REMOTE_HELPER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
API_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")  # a forge's REST API
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # a forge's owner/name
FORGE_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,38}")  # a user name on GitHub or Gitea
# The partial-clone filters a workspace keeps working with: git fetches what it leaves out on demand.
CLONE_FILTER = re.compile(r"blob:none|blob:limit=[0-9]+[kmgKMG]?")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1: no option, version or release
# What git strips from either end of an identity when it writes a commit (ident.c: crud), and the
# delimiters it drops from inside one.
GIT_IDENT_STRIPS = frozenset(".,:;<>\"\\'")
GIT_IDENT_DROPS = frozenset("<>")
# What git check-ref-format refuses anywhere in a branch name.
BRANCH_REFUSED = frozenset(" ~^:?*[\\")
_UNWRITABLE = {"Cc": "control character", "Cs": "lone surrogate", "Zl": "line separator", "Zp": "paragraph separator"}
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
K8S_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# An `allow` entry: host:port, optionally /tcp or /udp; the host a name, *.name, an address or a
# range (10.0.0.0/24, [2001:db8::/32]).
ALLOW_ENTRY = re.compile(r"(?P<host>[^:\[\]]*|\[[^\]]*\]):(?P<port>\d{1,5})(?:/(?P<protocol>tcp|udp))?")


def parse_memory_mib(value: Any) -> Optional[int]:
    """'512m', '2g', '2GiB' or a number of MiB -> MiB; None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    match = MEMORY.fullmatch(str(value).strip())
    if not match or int(match.group(1)) == 0:
        return None
    unit = (match.group(2) or "m").lower()
    return int(match.group(1)) * (1024 if unit.startswith("g") else 1)


def unwritable(text: str) -> Optional[str]:
    """The first character of text that cannot travel exactly (control characters, line
    breaks, lone surrogates), described for an error message; None when there is none."""
    for char in text:
        kind = _UNWRITABLE.get(unicodedata.category(char))
        if kind:
            return f"the {kind} U+{ord(char):04X}"
    return None


def parse_host(text: str) -> str:
    """A DNS name, IPv4 address or [IPv6] address (brackets removed); ValueError otherwise.

    Nothing else reaches ssh, git or getent as a host: no leading '-' (an option to them)."""
    if text.startswith("[") and text.endswith("]") and "%" not in text:
        try:
            ipaddress.IPv6Address(text[1:-1])
            return text[1:-1]
        except ValueError:
            pass
    elif HOSTNAME.fullmatch(text):
        return text
    raise ValueError(f"has the host {text!r}, which is not a host name or address")


def parse_remote(url: str) -> Remote:
    """ssh://[user@]host[:port]/path, [user@]host:path (scp form) or https://host[:port]/path.

    ValueError says why git would read url as something else: an option, a local path, another
    transport or a remote helper (`ext::` runs any command).
    """
    bad = unwritable(url)
    if bad or any(char.isspace() for char in url):
        raise ValueError(f"contains {bad or 'a space'}; percent-encode spaces in URLs (%20)")
    if url.startswith("-"):
        raise ValueError("starts with '-', which git would read as an option")
    helper = REMOTE_HELPER.match(url)
    if helper:
        raise ValueError(f"makes git run the remote helper git-remote-{helper.group()[:-2]}")
    if URL_SCHEME.match(url):
        return _parse_url_remote(url)
    if ":" not in url.split("/", 1)[0]:
        raise ValueError("is a local path to git (no host: before the first '/')")
    match = SCP_REMOTE.fullmatch(url)
    if not match:
        raise ValueError("is not of the form user@host:path")
    _check_url_user(match.group("user"))
    host = parse_host(match.group("host"))
    path = match.group("path")
    if not path or path.startswith("-"):
        raise ValueError("needs a path after host: that does not start with '-'")
    return Remote(url=url, scheme="ssh", host=host, port=22, path=repository_path(path))


def _parse_url_remote(url: str) -> Remote:
    # Not urlsplit: it drops tabs and newlines and reads '#' as a fragment, which git does not.
    scheme = url.split("://", 1)[0]
    if scheme not in ("ssh", "https"):
        raise ValueError(f"uses the {scheme}:// transport; agents use ssh:// or https://")
    match = URL_REMOTE.fullmatch(url)
    if not match:
        raise ValueError(f"is not of the form {scheme}://[user@]host[:port]/path")
    user = match.group("user")
    if user is not None and ":" in user:
        raise ValueError("holds a password; give it as `credential: {https_token: <config key>}` (a secret)")
    _check_url_user(user)
    host = parse_host(match.group("host")).lower()
    port = int(match.group("port") or (22 if scheme == "ssh" else 443))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if not match.group("path").strip("/"):
        raise ValueError("has no repository path")
    return Remote(url=url, scheme=scheme, host=host, port=port, path=repository_path(match.group("path")))


def repository_path(path: str) -> str:
    """`/owner/app.git` or `owner/app` -> `owner/app`: how a forge names the repository."""
    path = path.strip("/")
    return path[:-4] if path.endswith(".git") else path


def _check_url_user(user: Optional[str]) -> None:
    if user is not None and not URL_USER.fullmatch(user):
        raise ValueError(f"user {user!r} is not a login name (letters, digits, '.', '_', '-', not first '-')")


def identity_problem(value: str) -> Optional[str]:
    """Why git would not record value exactly as a commit's author name or email, or None."""
    if not value:
        return "is empty"
    bad = unwritable(value)
    if bad:
        return f"contains {bad}; remove it"
    dropped = sorted({char for char in value if char in GIT_IDENT_DROPS})
    if dropped:
        return f"contains {' and '.join(map(repr, dropped))}, which git drops from names and emails in commits"
    for end, char in (("starts", value[0]), ("ends", value[-1])):
        if ord(char) <= 32 or char in GIT_IDENT_STRIPS:
            return (f"{end} with {char!r}, which git strips from either end of a name or email in commits "
                    "(spaces and . , : ; < > \" \\ ')")
    return None


def branch_problem(branch: str) -> Optional[str]:
    """Why git would refuse branch (git check-ref-format --branch) or read it otherwise, or None."""
    if not branch:
        return "is empty"
    bad = unwritable(branch)
    if bad:
        return f"contains {bad}"
    if branch.startswith("-"):
        return "starts with '-', which git would read as an option"
    if branch in ("HEAD", "@"):
        return "is a name git reserves for the current commit"
    refused = sorted({char for char in branch if char in BRANCH_REFUSED})
    sequences = [part for part in ("..", "@{", "//") if part in branch]
    if refused or sequences:
        return f"contains {', '.join(map(repr, refused + sequences))}, which git refuses in branch names"
    if branch.startswith("/") or branch.endswith(("/", ".")):
        return "starts or ends with '/' or ends with '.', which git refuses"
    if any(part.startswith(".") or part.endswith(".lock") for part in branch.split("/")):
        return "has a part starting with '.' or ending in '.lock', which git refuses"
    return None


def is_private_key(text: str) -> bool:
    try:
        load_private_key(text)
        return True
    except ValueError:
        return False


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def destination(host: str, port: int, protocol: str = "tcp") -> Destination:
    """A Destination from a host as written (name, *.name, address, range; IPv6 without
    brackets), or ValueError saying why it is none of these."""
    if host.startswith("*."):
        suffix = parse_host(host[2:]).lower()
        if "." not in suffix or _numeric_label(suffix):
            raise ValueError(f"has the wildcard {host!r}; write one for a domain of two or more labels, e.g. *.example.com")
        return Destination(f"*.{suffix}", port, protocol)
    if any(char in host for char in ":/") or host.replace(".", "").isdigit():
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError as error:
            raise ValueError(f"has the address or range {host!r}, which is not one ({error})") from None
        if network.version == 6 and "%" in host:
            raise ValueError(f"has the address {host!r} with a zone")
        return Destination(str(network), port, protocol)
    name = parse_host(host).lower()
    if _numeric_label(name):
        raise ValueError(f"has the host {host!r}, which is neither a name nor an address")
    return Destination(name, port, protocol)


def allow_entry(entry: str) -> Destination:
    """The Destination an `allow` entry names (host:port[/tcp|/udp], IPv6 in brackets), or
    ValueError: "is not host:port", or why its host is none (destination())."""
    match = ALLOW_ENTRY.fullmatch(entry)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise ValueError("is not host:port")
    host = match.group("host")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or ":" not in host:
            raise ValueError("is not host:port")
    elif ":" in host:
        raise ValueError("is not host:port")
    return destination(host, int(match.group("port")), match.group("protocol") or "tcp")


def _numeric_label(name: str) -> bool:
    """Whether the last label is all digits: no top-level domain is, so it is a bad address."""
    return name.rsplit(".", 1)[-1].isdigit()
