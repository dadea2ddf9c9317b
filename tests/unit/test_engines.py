"""components/backends/docker/engines.py without remote hosts: addresses, pinned and operator
keys, the port parsers against recorded Engine API outputs (tests/unit/fixtures/engines), and
image transfer and facts against a fake that replays them. The real thing:
tests/e2e/test_remote_engines.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from components.backends.docker.engines import (
    Engine,
    EngineError,
    SshTarget,
    bound_on,
    engine_facts,
    ensure_image,
    open_client,
    port_holders,
    published_on,
)
from components.keys import generate_ed25519

FIXTURES = Path(__file__).parent / "fixtures" / "engines"
CONTAINERS = json.loads((FIXTURES / "containers.json").read_text())
BINDINGS = json.loads((FIXTURES / "port_bindings.json").read_text())
HOST_KEY = generate_ed25519("host")[1]
OPERATOR_KEY = generate_ed25519("operator")[0]
ADDRESS = "10.213.0.11"


def remote(**changes: Any) -> Engine:
    fields = {"address": f"ssh://root@{ADDRESS}", "known_hosts": f"{ADDRESS} {HOST_KEY}",
              "private_key": OPERATOR_KEY, **changes}
    return Engine("host-1", **fields)


# -- addresses --


@pytest.mark.parametrize(("address", "target"), [
    ("ssh://ops@gpu-1", SshTarget("ops", "gpu-1", 22)),
    ("ssh://ops@10.0.0.5:2222", SshTarget("ops", "10.0.0.5", 2222)),
    ("ssh://ops@10.0.0.5/", SshTarget("ops", "10.0.0.5", 22)),
])
def test_ssh_addresses_parse(address: str, target: SshTarget) -> None:
    assert SshTarget.parse(address) == target


@pytest.mark.parametrize(("address", "complaint"), [
    ("tcp://10.0.0.5:2375", "is neither 'local' nor an ssh:// address"),
    ("gpu-1", "is neither 'local' nor an ssh:// address"),
    ("ssh://gpu-1", "names no user"),
    ("ssh://ops@", "names no host"),
    ("ssh://ops@gpu-1:0", "has an invalid port"),
    ("ssh://ops@gpu-1:70000", "has an invalid port"),
    ("ssh://ops@gpu-1:ssh", "has an invalid port"),
    ("ssh://ops:secret@gpu-1", "has more than user, host and port"),
    ("ssh://ops@gpu-1/var/run/docker.sock", "has more than user, host and port"),
])
def test_bad_addresses_say_what_a_good_one_is(address: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as bad:
        SshTarget.parse(address)
    assert "use ssh://user@host or ssh://user@host:port" in str(bad.value)


@given(st.from_regex(r"[a-z_][a-z0-9_-]{0,15}", fullmatch=True),
       st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
       st.integers(1, 65535))
def test_an_address_names_its_target(user: str, host: str, port: int) -> None:
    target = SshTarget(user, host, port)
    assert SshTarget.parse(target.address) == target
    assert target.host_key_name == (host if port == 22 else f"[{host}]:{port}")


def test_an_engine_error_names_the_host_and_its_address() -> None:
    with pytest.raises(EngineError) as bad:
        remote(address="ssh://gpu-1").ssh_target()
    assert bad.value.host == "host-1"
    assert str(bad.value).startswith('host "host-1" (ssh://gpu-1): \'ssh://gpu-1\' names no user')


# -- pinned host key and operator key --


def test_the_pinned_key_is_looked_up_by_host_and_port() -> None:
    engine = remote(address=f"ssh://root@{ADDRESS}:2222", known_hosts=f"[{ADDRESS}]:2222 {HOST_KEY}")
    assert list(engine.pinned_keys(engine.ssh_target())) == ["ssh-ed25519"]


@pytest.mark.parametrize(("known_hosts", "complaint"), [
    (None, "has no pinned host key; add its known_hosts line"),
    ("", "has no pinned host key"),
    (f"{ADDRESS} ssh-ed25519 notbase64!", "known_hosts is not usable"),
    (f"[{ADDRESS}]:2222 {HOST_KEY}", f"known_hosts has no key for {ADDRESS}; give its line as `ssh-keyscan {ADDRESS}`"),
    (f"10.213.0.12 {HOST_KEY}", f"known_hosts has no key for {ADDRESS}"),
])
def test_a_missing_or_unusable_pin_is_refused_before_connecting(known_hosts: str | None, complaint: str) -> None:
    with pytest.raises(EngineError, match=complaint):
        open_client(remote(known_hosts=known_hosts))


def _openssh(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize(("private_key", "kind"), [
    (OPERATOR_KEY, "ssh-ed25519"),
    (_openssh(ec.generate_private_key(ec.SECP256R1())), "ecdsa-sha2-nistp256"),
    (_openssh(rsa.generate_private_key(65537, 2048)), "ssh-rsa"),
])
def test_operator_keys_of_each_openssh_type_load(private_key: str, kind: str) -> None:
    assert remote(private_key=private_key).operator_key().get_name() == kind


@pytest.mark.parametrize("private_key", [None, "", OPERATOR_KEY.splitlines()[0] + "\nnope\n"])  # a header, no key
def test_an_unusable_operator_key_is_refused(private_key: str | None) -> None:
    with pytest.raises(EngineError, match="operator"):
        remote(private_key=private_key).ssh_target()


def test_the_operator_key_never_shows_in_repr() -> None:
    assert "PRIVATE" not in repr(remote()) and OPERATOR_KEY not in repr(remote())


# -- opening: what can be checked without a remote host --


def test_a_local_engine_that_does_not_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(EngineError, match=r'^host "local": the local Docker engine does not answer \(.*\); start dockerd'):
        open_client(Engine("local"))


def test_a_refused_port_is_reported_with_the_host() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    engine = remote(address=f"ssh://root@127.0.0.1:{port}", known_hosts=f"[127.0.0.1]:{port} {HOST_KEY}")
    with pytest.raises(EngineError) as refused:
        open_client(engine, connect_timeout=2)
    assert str(refused.value) == (f'host "host-1" (ssh://root@127.0.0.1:{port}): cannot reach 127.0.0.1:{port} '
                                  f"(connection refused); is the host up and sshd listening there?")


# -- ports, from recorded Engine API outputs --


def _summary(name: str) -> dict[str, Any]:
    return next(c for c in CONTAINERS if c["Names"] == [f"/{name}"])


def test_published_ports_of_running_containers() -> None:
    assert published_on(_summary("agent-1")["Ports"], 22001, "tcp") == [(ADDRESS, "22/tcp")]
    assert published_on(_summary("agent-1")["Ports"], 22001, "udp") == [("0.0.0.0", "8080/udp")]
    assert published_on(_summary("web")["Ports"], 22101, "tcp") == [("0.0.0.0", "80/tcp")]
    assert published_on(_summary("web")["Ports"], 22102, "tcp") == [("127.0.0.1", "80/tcp")]
    assert published_on(_summary("web")["Ports"], 22, "tcp") == [], "an exposed, unpublished port holds nothing"


def test_bindings_of_stopped_containers() -> None:
    assert bound_on(BINDINGS["agent-2"], 22002, "tcp") == [(ADDRESS, "22/tcp")]
    assert bound_on(BINDINGS["agent-2"], 22002, "udp") == []
    assert bound_on(BINDINGS["ranged"], 22015, "tcp") == [("", "80/tcp")]
    assert bound_on(BINDINGS["ranged"], 22021, "tcp") == []
    assert bound_on(BINDINGS["random"], 22, "tcp") == [], "a random host port is no fixed port"


class FakeAPI:
    """Replays the recorded Engine API outputs; images and loads for the transfer tests."""

    def __init__(self, images: dict[str, str] | None = None, load: list[dict[str, Any]] | None = None,
                 loads_as: str | None = None, fail: Exception | None = None) -> None:
        self.images = dict(images or {})
        self.load_messages = load if load is not None else [{"stream": "Loaded image"}]
        self.loads_as = loads_as
        self.fail = fail
        self.loaded: list[bytes] = []
        self.saved: list[str] = []

    def containers(self, all: bool) -> list[dict[str, Any]]:
        if self.fail:
            raise self.fail
        return CONTAINERS

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        name = next(c["Names"][0].lstrip("/") for c in CONTAINERS if c["Id"] == container_id)
        return {"HostConfig": {"PortBindings": BINDINGS[name]}}

    def inspect_image(self, tag: str) -> dict[str, str]:
        if tag not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {tag}")
        return {"Id": self.images[tag]}

    def get_image(self, tag: str, chunk_size: int) -> Iterator[bytes]:
        self.saved.append(tag)
        yield from (b"x" * 1000, b"y" * 24)

    def load_image(self, data: Any) -> Iterator[dict[str, Any]]:
        self.loaded.append(b"".join(data))
        yield from self.load_messages
        if not any("error" in message for message in self.load_messages):
            self.images[self.saved_tag] = self.loads_as or "sha256:aaa"

    saved_tag = "agentfleet/agent:abc"

    def version(self) -> dict[str, str]:
        if self.fail:
            raise self.fail
        return {"Version": "20.10.24", "ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"}


class FakeClient:
    def __init__(self, name: str, api: FakeAPI) -> None:
        self.engine = Engine(name) if name == "local" else remote(address=f"ssh://root@{name}")
        self.api = api

    def version(self) -> dict[str, str]:
        return self.api.version()


def test_port_holders_name_running_and_stopped_containers() -> None:
    client: Any = FakeClient("10.213.0.11", FakeAPI())
    [running] = port_holders(client, 22001)
    assert (running.container, running.host_ip, running.container_port, running.running) == \
        ("agent-1", ADDRESS, "22/tcp", True)
    assert running.labels.get("agentfleet.agent") == "agent-1"
    [stopped] = port_holders(client, 22002)
    assert (stopped.container, stopped.running) == ("agent-2", False)
    assert [h.container for h in port_holders(client, 22012)] == ["ranged"]
    assert port_holders(client, 22999) == []


def test_port_holders_name_the_host_that_failed() -> None:
    client: Any = FakeClient("10.213.0.11", FakeAPI(fail=docker.errors.APIError("daemon gone")))
    with pytest.raises(EngineError, match=r'^host "host-1" \(ssh://root@10.213.0.11\): cannot list its containers'):
        port_holders(client, 22001)


# -- image transfer and facts, against the fake --

TAG = FakeAPI.saved_tag


def test_an_image_the_target_has_is_not_sent() -> None:
    source, target = FakeAPI(images={TAG: "sha256:aaa"}), FakeAPI(images={TAG: "sha256:aaa"})
    outcome = ensure_image(FakeClient("local", source), FakeClient("10.0.0.9", target), TAG)  # type: ignore[arg-type]
    assert not outcome.transferred and source.saved == [] and target.loaded == []


def test_a_missing_image_is_streamed_and_counted() -> None:
    source, target = FakeAPI(images={TAG: "sha256:aaa"}), FakeAPI()
    outcome = ensure_image(FakeClient("local", source), FakeClient("10.0.0.9", target), TAG)  # type: ignore[arg-type]
    assert outcome.transferred and outcome.size == 1024 and target.loaded == [b"x" * 1000 + b"y" * 24]


@pytest.mark.parametrize(("source", "target", "complaint"), [
    (FakeAPI(), FakeAPI(), rf'^host "local": has no image {TAG} to send to host "host-1" \(ssh://root@10.0.0.9\); build it'),
    (FakeAPI(images={TAG: "sha256:aaa"}), FakeAPI(load=[{"error": "no space left on device"}]),
     r'^host "host-1" \(ssh://root@10.0.0.9\): sending image .* the load failed \(no space left on device\); run again'),
    (FakeAPI(images={TAG: "sha256:aaa"}), FakeAPI(loads_as="sha256:bbb"),
     r"loaded sha256:bbb, expected sha256:aaa; remove the tag there"),
])
def test_a_failed_transfer_names_the_host(source: FakeAPI, target: FakeAPI, complaint: str) -> None:
    with pytest.raises(EngineError, match=complaint):
        ensure_image(FakeClient("local", source), FakeClient("10.0.0.9", target), TAG)  # type: ignore[arg-type]


def test_facts_of_an_engine_that_stopped_answering() -> None:
    facts = engine_facts(FakeClient("10.0.0.9", FakeAPI(fail=ConnectionError("gone"))))  # type: ignore[arg-type]
    assert not facts.reachable and facts.problem == 'host "host-1" (ssh://root@10.0.0.9): Docker stopped answering (gone)'
    facts = engine_facts(FakeClient("10.0.0.9", FakeAPI()))  # type: ignore[arg-type]
    assert (facts.reachable, facts.server_version, facts.api_version) == (True, "20.10.24", "1.41")
