"""components/backends/docker/engines.py against real remote Docker hosts: the rig's network
namespaces, each with its own dockerd and sshd (tests/e2e/remote_hosts.py), reached over SSH with
pinned keys."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from components.backends.docker.engines import (
    Engine,
    EngineError,
    engine_facts,
    ensure_image,
    has_image,
    open_client,
    port_holders,
)
from components.keys import generate_ed25519
from tests.e2e.remote_hosts import RemoteHost, RemoteHosts

TINY_IMAGE = "agentfleet-test/tiny:1"  # one file, made in place: containers are created, never run
REFUSED_WITHIN = 3.0  # s: a stopped host must be reported this fast


def engine(rig: RemoteHosts, host: RemoteHost, **changes: str) -> Engine:
    fields = {"address": host.url, "known_hosts": host.known_hosts, "private_key": rig.operator_key, **changes}
    return Engine(host.name, **fields)


def tiny_image_archive() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        info = tarfile.TarInfo("hello")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"hi\n"))
    return data.getvalue()


@pytest.fixture
def probes(remote_hosts: RemoteHosts) -> Iterator[dict[str, str]]:
    """One created (not started) container per host, made over SSH; removed afterwards."""
    names = {}
    for host in remote_hosts.hosts:
        with open_client(engine(remote_hosts, host)) as client:
            client.api.import_image_from_data(tiny_image_archive(), repository=TINY_IMAGE.split(":")[0], tag="1")
            names[host.name] = client.containers.create(TINY_IMAGE, ["/hello"], name=f"probe-{host.name}").name
    yield names
    for host in remote_hosts.hosts:
        with open_client(engine(remote_hosts, host)) as client:
            client.containers.get(names[host.name]).remove(force=True)


def test_each_host_answers_with_its_own_engine(remote_hosts: RemoteHosts, probes: dict[str, str]) -> None:
    for host in remote_hosts.hosts:
        with open_client(engine(remote_hosts, host)) as client:
            assert client.info()["DockerRootDir"] == str(host.data_root), f"{host.name} answered with another engine"
            listed = {c.name for c in client.containers.list(all=True)}
            assert listed == {probes[host.name]}, f"{host.name}'s docker ps over SSH shows {listed}"
            facts = engine_facts(client)
            assert facts.reachable and facts.api_version and facts.server_version, facts
        direct = host.local_docker()
        try:
            assert {c.name for c in direct.containers.list(all=True)} == {probes[host.name]}
        finally:
            direct.close()
    with open_client(Engine("local")) as local:  # one listing call: other tests add and remove containers there
        names = {name.lstrip("/") for summary in local.api.containers(all=True) for name in summary["Names"]}
        assert not names & set(probes.values()), "a probe is on the local engine"


def test_a_host_with_another_key_is_refused(remote_hosts: RemoteHosts) -> None:
    first, second = remote_hosts.hosts
    impostor = engine(remote_hosts, first, known_hosts=f"{first.address} {second.host_key}")
    with pytest.raises(EngineError) as refused:
        open_client(impostor)
    assert refused.value.host == "host-1"
    assert str(refused.value).startswith(f'host "host-1" ({first.url}): its host key is ssh-ed25519 SHA256:')
    assert "not the pinned" in str(refused.value) and "refusing to connect" in str(refused.value)


def test_a_key_pinned_for_another_port_is_not_used(remote_hosts: RemoteHosts) -> None:
    host = remote_hosts.hosts[0]
    with pytest.raises(EngineError, match=rf"known_hosts has no key for {host.address}; .*ssh-keyscan {host.address}"):
        open_client(engine(remote_hosts, host, known_hosts=f"[{host.address}]:2222 {host.host_key}"))


def test_an_unauthorized_operator_key_is_refused(remote_hosts: RemoteHosts) -> None:
    host = remote_hosts.hosts[0]
    stranger, _ = generate_ed25519("stranger")
    with pytest.raises(EngineError, match=r"the operator key \(ssh-ed25519 SHA256:.*\) was refused for user root"):
        open_client(engine(remote_hosts, host, private_key=stranger))


def test_the_agent_image_is_sent_once_per_host(remote_hosts: RemoteHosts, agent_image: str) -> None:
    first, second = remote_hosts.hosts
    with open_client(Engine("local")) as local, open_client(engine(remote_hosts, first)) as target, \
            open_client(engine(remote_hosts, second)) as other:
        if has_image(target, agent_image):  # sent by another test of this session
            target.images.remove(agent_image, force=True)
        other_had_it = has_image(other, agent_image)
        sent = ensure_image(local, target, agent_image)
        assert sent.transferred and sent.size > 10_000_000, sent
        assert target.api.inspect_image(agent_image)["Id"] == local.api.inspect_image(agent_image)["Id"]
        started = time.monotonic()
        again = ensure_image(local, target, agent_image)
        assert not again.transferred and again.size == 0, again
        assert time.monotonic() - started < 1.0, "the second call did more than look the tag up"
        assert has_image(other, agent_image) == other_had_it, "host-2 changed when the image was sent to host-1"
        print(f"\nsent {agent_image} ({sent.size / 1e6:.0f} MB) to host-1 in {sent.seconds:.1f} s")


def test_port_holders_sees_running_and_stopped_containers(remote_hosts: RemoteHosts, agent_image: str) -> None:
    host, other = remote_hosts.hosts
    with open_client(Engine("local")) as local, open_client(engine(remote_hosts, host)) as client, \
            open_client(engine(remote_hosts, other)) as other_client:
        ensure_image(local, client, agent_image)
        running = client.containers.run(agent_image, entrypoint=["sleep", "300"], name="holder-running", detach=True,
                                        ports={"22/tcp": (host.address, 22001)}, labels={"agentfleet.agent": "a1"})
        stopped = client.containers.create(agent_image, entrypoint=["true"], name="holder-stopped",
                                           ports={"22/tcp": (host.address, 22002)})
        try:
            [holder] = port_holders(client, 22001)
            assert (holder.container, holder.host_ip, holder.container_port, holder.running) == \
                ("holder-running", host.address, "22/tcp", True)
            assert holder.labels.get("agentfleet.agent") == "a1"
            [holder] = port_holders(client, 22002)
            assert (holder.container, holder.running) == ("holder-stopped", False)
            assert port_holders(client, 22001, protocol="udp") == []
            assert port_holders(other_client, 22001) == [], "host-2 reports host-1's container"
        finally:
            running.remove(force=True)
            stopped.remove(force=True)


def test_a_stopped_host_is_reported_at_once(remote_hosts: RemoteHosts, probes: dict[str, str]) -> None:
    host = remote_hosts.hosts[1]
    client = open_client(engine(remote_hosts, host))
    remote_hosts.stop(host.name)
    try:
        facts = engine_facts(client)
        assert not facts.reachable and facts.problem and facts.problem.startswith(f'host "{host.name}"'), facts
        client.close()
        started = time.monotonic()
        with pytest.raises(EngineError) as down:
            open_client(engine(remote_hosts, host), connect_timeout=REFUSED_WITHIN)
        elapsed = time.monotonic() - started
        assert str(down.value) == (f'host "{host.name}" ({host.url}): cannot reach {host.address}:22 '
                                   f"(connection refused); is the host up and sshd listening there?")
        assert elapsed < REFUSED_WITHIN, f"took {elapsed:.1f} s"
    finally:
        remote_hosts.start_again(host.name)
    with open_client(engine(remote_hosts, host)) as client:
        assert probes[host.name] in {c.name for c in client.containers.list(all=True)}, "the host lost its containers"


def test_a_host_that_drops_packets_times_out(remote_hosts: RemoteHosts) -> None:
    host = remote_hosts.hosts[1]
    remote_hosts.unplug(host.name)
    try:
        started = time.monotonic()
        with pytest.raises(EngineError, match=rf"cannot reach {host.address}:22 \(no answer within 2 s\)"):
            open_client(engine(remote_hosts, host), connect_timeout=2)
        assert time.monotonic() - started < 4
    finally:
        remote_hosts.plug(host.name)


def test_a_host_whose_docker_is_down(remote_hosts: RemoteHosts) -> None:
    host = remote_hosts.hosts[0]
    remote_hosts.stop(host.name, keep_sshd=True)
    try:
        with pytest.raises(EngineError) as down:
            open_client(engine(remote_hosts, host))
        message = str(down.value)
        assert message.startswith(f'host "{host.name}" ({host.url}): sshd answered but Docker did not (')
        assert f"Cannot connect to the Docker daemon at unix://{host.socket}" in message, message
    finally:
        remote_hosts.start_again(host.name)


def test_endpoints_and_the_machine_reach_each_other(remote_hosts: RemoteHosts, agent_image: str) -> None:
    """What agents on a remote host need: a port published on the host's address answers this
    machine, and a container there reaches this machine at the rig's gateway address (where a
    git server published on it would answer)."""
    host = remote_hosts.hosts[0]
    with socket.create_server((remote_hosts.gateway, 0)) as server:
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].sendall(b"hello from the machine\n"), daemon=True)
        accepted.start()
        with open_client(Engine("local")) as local, open_client(engine(remote_hosts, host)) as client:
            ensure_image(local, client, agent_image)
            reply = client.containers.run(
                agent_image, name="reach-out", remove=True, entrypoint=["python3", "-c",
                f"import socket; print(socket.create_connection(({remote_hosts.gateway!r}, {port}), timeout=5).recv(64).decode())"])
            assert reply.decode().strip() == "hello from the machine"
            web = client.containers.run(agent_image, entrypoint=["python3", "-m", "http.server", "8000"], name="reach-in",
                                        detach=True, ports={"8000/tcp": (host.address, 22005)})
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        with urllib.request.urlopen(f"http://{host.address}:22005/", timeout=2) as answer:
                            assert answer.status == 200
                            break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            finally:
                web.remove(force=True)
