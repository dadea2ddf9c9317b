"""components/spec: every invalid field is reported with stack, agent and field; valid configs load."""

import pytest

from components.keys import generate_ed25519
from components.spec import (
    Destination,
    DEFAULT_PORT_BASE,
    PORT_SPAN,
    parse_memory_mib,
    parse_remote,
)
from tests.unit.spec_helpers import agent, load, problems


def test_minimal_fleet_takes_documented_defaults():
    fleet = load({"agents": [agent()]})
    (spec,) = fleet.agents
    # No port, address or host given: the port is chosen free on the agent's host when it is made,
    # bound to that host's endpoint address (127.0.0.1 here), on the placement the fleet picks.
    assert (spec.backend, spec.branch, spec.bind_address, spec.ssh_port, spec.host) == (
        "docker", "agent/agent-1", None, None, None)
    assert spec.credential.kind == "generate"
    assert DEFAULT_PORT_BASE <= spec.preferred_port < DEFAULT_PORT_BASE + PORT_SPAN
    assert any(line.startswith("github.com ssh-ed25519") for line in spec.known_hosts)


def test_defaults_apply_and_agents_override_them():
    fleet = load({
        "defaults": {"resources": {"cpus": 2, "memory": "2g"}, "retain_workspace": True},
        "agents": [agent("a", resources={"memory": "512m"}), agent("b")],
    })
    a, b = fleet.agents
    assert (a.resources.cpus, a.resources.memory_mib) == (2.0, 512)
    assert (b.resources.cpus, b.resources.memory_mib) == (2.0, 2048)
    assert a.retain_workspace and b.retain_workspace


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"agents": []}, 'stack "test", field "agents": the fleet is empty'),
        ({"agents": [agent(backend="dokcer")]}, 'agent "agent-1", field "backend": unknown backend \'dokcer\'; use one of docker, lima, multipass, kubernetes'),
        ({"agents": [agent(), agent()]}, 'agent "agent-1", field "name": duplicate agent name'),
        ({"agents": [agent(ssh_port=80)]}, 'agent "agent-1", field "ssh_port": 80 is out of range'),
        ({"agents": [agent(ssh_port=23000), agent("b", ssh_port=23000)]}, 'agent "b", field "ssh_port": 23000 is already the port of agent "agent-1"'),
        ({"agents": [{"name": "x", "identity": {"name": "X", "email": "x@"}}]}, 'agent "x", field "identity.email": \'x@\' is not an email address'),
        ({"agents": [{"name": "x"}]}, 'agent "x", field "identity": missing git identity'),
        ({"agents": [agent(idenity={})]}, 'agent "agent-1", field "idenity": unknown field; did you mean "identity"?'),
        ({"agents": [agent(resources={"memory": "lots"})]}, 'field "resources.memory": \'lots\' is not a memory size'),
        ({"agents": [agent(remote="not-a-url")]}, 'field "remote": \'not-a-url\' is a local path to git'),
        ({"agents": [agent(remote="ssh://git@git.example.com:2222/app.git")]}, 'field "known_hosts": no host key for the remote\'s host [git.example.com]:2222'),
        ({"agents": [agent(name="Agent_1")]}, 'field "agents[0].name": \'Agent_1\' is not a valid agent name'),
        ({"agents": [agent()], "defualts": {}}, 'stack "test", field "defualts": unknown field; did you mean "defaults"?'),
        ({"agents": [agent(allow=["pypi.org"])]}, 'field "allow[0]": \'pypi.org\' is not host:port'),
        ({"agents": [agent(allow=["pypi.org:99999"])]}, 'field "allow[0]": \'pypi.org:99999\' is not host:port'),
        ({"agents": [agent(egress="closed")]}, 'field "egress": \'closed\' is not an egress mode'),
    ],
)
def test_each_invalid_field_is_named_with_what_would_be_valid(raw, expected):
    assert any(expected in problem for problem in problems(raw)), problems(raw)


def test_all_problems_are_reported_at_once():
    found = problems({"agents": [agent(backend="x", ssh_port=1), agent("b", resources={"pids": 1})]})
    assert len(found) == 3


def test_malformed_private_key_is_refused_and_a_valid_one_kept_as_secret():
    remote = {"remote": "git@github.com:org/app.git", "credential": {"ssh_key": "key1"}}
    assert any("config key key1 is not an unencrypted OpenSSH or PEM private key" in p
               for p in problems({"agents": [agent(**remote)]}, {"key1": "garbage"}))
    private, _ = generate_ed25519("test")
    (spec,) = load({"agents": [agent(**remote)]}, {"key1": private}).agents
    assert spec.credential.kind == "ssh_key" and spec.credential.secret == private
    assert private not in repr(spec)


def test_missing_secret_says_which_config_key_to_set():
    raw = {"agents": [agent(remote="https://example.com/app.git", credential={"https_token": "tok"})]}
    assert any("pulumi config set --secret tok" in p for p in problems(raw))


def test_where_the_port_search_starts_is_stable_when_agents_are_added_or_removed():
    two = {a.name: a.preferred_port for a in load({"agents": [agent("a"), agent("b")]}).agents}
    three = {a.name: a.preferred_port for a in load({"agents": [agent("a"), agent("b"), agent("c")]}).agents}
    only_b = {a.name: a.preferred_port for a in load({"agents": [agent("b")]}).agents}
    assert three["a"] == two["a"] and three["b"] == two["b"] == only_b["b"]


def test_an_explicit_port_is_kept_and_the_others_are_left_to_the_host():
    fleet = load({"agents": [agent("a", ssh_port=23001), agent("b")]})
    assert [a.ssh_port for a in fleet.agents] == [23001, None]


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [
        ("git@github.com:org/app.git", "ssh", "github.com", 22),
        ("ssh://git@gitserver:2222/srv/app.git", "ssh", "gitserver", 2222),
        ("https://github.com/org/app.git", "https", "github.com", 443),
    ],
)
def test_remote_forms(url, scheme, host, port):
    remote = parse_remote(url)
    assert (remote.scheme, remote.host, remote.port) == (scheme, host, port)


@pytest.mark.parametrize(("text", "mib"), [("512m", 512), ("2g", 2048), ("1GiB", 1024), (256, 256), ("0m", None), ("x", None)])
def test_memory_sizes(text, mib):
    assert parse_memory_mib(text) == mib


def test_egress_defaults_to_restricted_and_allow_entries_parse():
    entries = ["pypi.org:443", "[::1]:8080", "*.Example.com:443/udp", "10.0.0.0/24:22", "[2001:db8::/32]:443/tcp",
               "10.0.0.5:53/udp"]
    (spec,) = load({"agents": [agent(allow=entries, dns=["10.0.0.2", "2001:db8::53"])]}).agents
    assert spec.egress == "restricted"
    assert spec.allow == (
        Destination("pypi.org", 443), Destination("::1/128", 8080), Destination("*.example.com", 443, "udp"),
        Destination("10.0.0.0/24", 22), Destination("2001:db8::/32", 443), Destination("10.0.0.5/32", 53, "udp"),
    )
    assert [d.network is None for d in spec.allow] == [True, False, True, False, False, False]
    assert spec.dns == ("10.0.0.2", "2001:db8::53")


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("pypi.org", "is not host:port"),
        ("pypi.org:443/icmp", "is not host:port"),
        ("*.com:443", "a domain of two or more labels"),
        ("*:443", "not a host name or address"),
        ("10.0.0.5/24:22", "has host bits set"),
        ("999.1.1.1:22", "does not appear to be an IPv4 or IPv6"),
        ("::1:22", "is not host:port"),
    ],
)
def test_allow_entries_that_are_no_destination_are_refused_saying_why(entry, says):
    found = problems({"agents": [agent(allow=[entry])]})
    assert any('field "allow[0]"' in p and says in p and "host:port[/tcp|/udp]" in p for p in found), found


def test_dns_servers_must_be_addresses():
    assert any('field "dns[0]": \'ns.example.com\' is not an IP address' in p
               for p in problems({"agents": [agent(dns=["ns.example.com"])]}))
    assert any('field "dns": \'10.0.0.2\' is not a list' in p for p in problems({"agents": [agent(dns="10.0.0.2")]}))


KNOWN = ["gitserver ssh-ed25519 AAAA"]


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        # Patterns match the whole value: a trailing newline is refused everywhere.
        ({"name": "agent-1\n"}, "agents[0].name", "is not a valid agent name"),
        ({"identity": {"name": "Agent One\n", "email": "a@example.com"}}, "identity.name", "control character U+000A"),
        ({"identity": {"name": "Agent One", "email": "a@example.com\n"}}, "identity.email", "control character U+000A"),
        ({"branch": "agent/x\n"}, "branch", "control character U+000A"),
        ({"packages": ["jq\n"]}, "packages", "Debian package names"),
        ({"allow": ["pypi.org:443\n"]}, "allow[0]", "is not host:port"),
        ({"bind_address": "127.0.0.1\n"}, "bind_address", "is not an IPv4 address"),
        ({"remote": "git@gitserver:app.git\n", "known_hosts": KNOWN}, "remote", "control character U+000A"),
        ({"known_hosts": ["gitserver ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 BBBB"]}, "known_hosts", "one line each"),
        # Identities git would record otherwise.
        ({"identity": {"name": "Ann <ann@x.org>", "email": "a@example.com"}}, "identity.name", "'<' and '>', which git drops"),
        ({"identity": {"name": "'Quoted'", "email": "a@example.com"}}, "identity.name", "starts with \"'\", which git strips"),
        ({"identity": {"name": "Bob Jr.", "email": "a@example.com"}}, "identity.name", "ends with '.', which git strips"),
        ({"identity": {"name": "Tab\there", "email": "a@example.com"}}, "identity.name", "control character U+0009"),
        ({"identity": {"name": "Agent", "email": "a;b@example.com"}}, "identity.email", "is not an email address"),
        ({"identity": {"name": "Agent", "email": '"a b"@example.com'}}, "identity.email", "starts with '\"'"),
        ({"identity": {"name": True, "email": "a@example.com"}}, "identity.name", "is not text"),
        # Remotes git would read as an option, a local path, another transport or a helper.
        ({"remote": "--upload-pack=touch /tmp/x"}, "remote", "contains a space"),
        ({"remote": "-oProxyCommand=x:app.git"}, "remote", "starts with '-'"),
        ({"remote": "ext::sh -c touch% /tmp/x"}, "remote", "contains a space"),
        ({"remote": "ext::sh"}, "remote", "remote helper git-remote-ext"),
        ({"remote": "fd::17"}, "remote", "remote helper git-remote-fd"),
        ({"remote": "file:///srv/git/app.git"}, "remote", "uses the file:// transport"),
        ({"remote": "git://example.com/app.git"}, "remote", "uses the git:// transport"),
        ({"remote": "http://example.com/app.git"}, "remote", "uses the http:// transport"),
        ({"remote": "/srv/git/app.git"}, "remote", "is a local path"),
        ({"remote": "ssh://-oProxyCommand=x/app.git"}, "remote", "which is not a host name"),
        ({"remote": "ssh://-oProxyCommand=x@gitserver/app.git"}, "remote", "is not a login name"),
        ({"remote": "git@gitserver:-app.git", "known_hosts": KNOWN}, "remote", "does not start with '-'"),
        ({"remote": "https://user:hunter2@example.com/app.git"}, "remote", "holds a password"),
        ({"remote": "ssh://git@gitserver:0/app.git"}, "remote", "port 0 is out of range"),
        ({"remote": "ssh://git@gitserver/"}, "remote", "has no repository path"),
        # Branches as git check-ref-format --branch sees them.
        ({"branch": "-f"}, "branch", "starts with '-'"),
        ({"branch": "HEAD"}, "branch", "a name git reserves"),
        ({"branch": "a..b"}, "branch", "'..'"),
        ({"branch": "a b"}, "branch", "' '"),
        ({"branch": "x@{1}"}, "branch", "'@{'"),
        ({"branch": "feature/.hidden"}, "branch", "starting with '.'"),
        ({"branch": "x.lock"}, "branch", "ending in '.lock'"),
        ({"branch": "x/"}, "branch", "ends with '.'"),
        # Hosts and packages that would be options to getent, ssh or apt.
        ({"allow": ["-oProxyCommand=x:22"]}, "allow[0]", "is not host:port"),
        ({"allow": ["a..b:22"]}, "allow[0]", "is not host:port"),
        ({"allow": ["[fe80::1%eth0]:22"]}, "allow[0]", "is not host:port"),
        ({"packages": ["-oAPT::Get::AllowUnauthenticated=1"]}, "packages", "Debian package names"),
        ({"packages": ["jq=1.6"]}, "packages", "no versions or options"),
        ({"image": "--privileged"}, "image", "not starting with '-'"),
    ],
)
def test_hostile_values_are_refused_naming_the_field(fields, field, says):
    found = problems({"agents": [{**agent(), **fields}]})
    assert any(f'field "{field}"' in p and says in p for p in found), found


@pytest.mark.parametrize(
    ("fields", "read", "kept"),
    [
        ({"identity": {"name": "Robert \"Bobby\" O'Brien; Jr", "email": "o'brien#jr@example.com"}},
         lambda a: (a.identity.name, a.identity.email), ("Robert \"Bobby\" O'Brien; Jr", "o'brien#jr@example.com")),
        ({"identity": {"name": "#1 Agent \\o/ Ω", "email": "zoë@bücher.example"}},
         lambda a: (a.identity.name, a.identity.email), ("#1 Agent \\o/ Ω", "zoë@bücher.example")),
        ({"branch": "agent/ü-1.x"}, lambda a: a.branch, "agent/ü-1.x"),
        ({"remote": "git@[::1]:app.git", "known_hosts": ["::1 ssh-ed25519 AAAA"]},
         lambda a: (a.remote.scheme, a.remote.host, a.remote.port, a.known_hosts),
         ("ssh", "::1", 22, ("::1 ssh-ed25519 AAAA",))),
        ({"remote": "https://x-access-token@example.com/a/b.git#frag"},
         lambda a: (a.remote.url, a.remote.scheme, a.remote.host, a.remote.port),
         ("https://x-access-token@example.com/a/b.git#frag", "https", "example.com", 443)),
        ({"allow": ["[2001:db8::5]:22", "10.0.0.5:22", "pypi.org:443"]},
         lambda a: [(d.host, d.port, d.protocol) for d in a.allow],
         [("2001:db8::5/128", 22, "tcp"), ("10.0.0.5/32", 22, "tcp"), ("pypi.org", 443, "tcp")]),
        ({"packages": ["g++", "libc6.1-dev"]}, lambda a: a.packages, ("g++", "libc6.1-dev")),
    ],
)
def test_unusual_but_valid_values_are_accepted_and_kept(fields, read, kept):
    (spec,) = load({"agents": [{**agent(), **fields}]}).agents
    assert read(spec) == kept
