"""Every kind of rendered cloud-config passes cloud-init's own schema checker (the one in the
agent image, the cloud-init that will read it)."""

from __future__ import annotations

import subprocess

import pytest

from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet

GIT_HOST = "gitserver ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
VARIANTS = {
    "no remote": {},
    "generated ssh key": {"remote": "ssh://git@gitserver/srv/git/app.git", "known_hosts": [GIT_HOST]},
    "https token": {"remote": "https://github.com/org/app.git", "credential": {"https_token": "token"}},
    "extra packages": {"packages": ["jq", "ripgrep"], "branch": "feature/x"},
}


def schema_check(image: str, document: str) -> subprocess.CompletedProcess[str]:
    script = "cat > /tmp/user-data && cloud-init schema --config-file /tmp/user-data"
    return subprocess.run(["docker", "run", "--rm", "-i", "--entrypoint", "sh", image, "-c", script],
                          input=document, capture_output=True, text=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_document_passes_cloud_init_schema(agent_image: str, variant: str):
    raw = {"agents": [{"name": "agent-1", "identity": {"name": "One", "email": "one@example.com"},
                       **VARIANTS[variant]}]}
    spec = load_fleet("schema", raw, {"token": "t0ken"}.get).agents[0]
    host_private, host_public = generate_ed25519("host")
    keys = AgentKeys(generate_ed25519("op")[1], host_private, host_public,
                     remote_private_key=generate_ed25519("r")[0] if spec.remote and spec.remote.scheme == "ssh" else None,
                     https_token=spec.credential.secret)
    checked = schema_check(agent_image, render_cloud_config(spec, keys))
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, checked.stdout + checked.stderr


def test_schema_checker_rejects_an_invalid_document(agent_image: str):
    # The check above could only pass vacuously if the checker accepted anything.
    checked = schema_check(agent_image, "#cloud-config\nusers: 42\nssh_pwauth: maybe\n")
    assert checked.returncode != 0
