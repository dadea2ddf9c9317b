"""Every rendered cloud-config means the same after Multipass re-writes it.

Multipass v1.16.3 passes the user-data through yaml-cpp twice (the client's `YAML::Dump` in
src/client/cli/cmd/launch.cpp, the daemon's `emit_cloud_config` in src/utils/yaml_node_utils.cpp).
yaml-cpp keeps a scalar's text and any explicit tag but not its quotes: every string goes out
plain wherever YAML's syntax allows (canonical/multipass#4176). `drop_quotes` does the same with
PyYAML's events, and is stricter: it also writes "", "~" and "null" plain, which yaml-cpp still
quotes. Each variant (backend x credential x egress x shared objects, tricky identities and
package names) must read back with cloud-init's own loader as exactly the same document, and
cloud-init's own schema checker must accept it.

cloud-init is the Debian package on the host (scripts/setup installs it); its Python runs
tests/unit/cloud_init_reader.py once for all documents.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from components.cloudinit import SHARED_OBJECTS, AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import BACKENDS, AgentSpec
from tests.unit.spec_helpers import agent, load

CLOUD_INIT_PYTHON = "/usr/bin/python3"  # the interpreter Debian's cloud-init package is for
READER = Path(__file__).with_name("cloud_init_reader.py")

KNOWN = "[gitserver]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SSH_REMOTE = {"remote": "ssh://git@gitserver:2222/srv/git/app.git", "known_hosts": [KNOWN]}
CREDENTIALS = {
    "no-remote": {},
    "generate": SSH_REMOTE,
    "ssh_key": {**SSH_REMOTE, "credential": {"ssh_key": "remote-key"}},
    "https_token": {"remote": "https://github.com/org/app.git", "credential": {"https_token": "token"}},
}
EGRESS = {"restricted": {"allow": ["pypi.org:443"]}, "open": {"egress": "open"}}
REFERENCES = {"own-objects": None, "shared-objects": SHARED_OBJECTS}
# (name, email, branch): names YAML 1.1 reads as a boolean, an octal number, null, a float
# (YAML 1.2) and null again, and one with both quotes and a git-config comment character.
IDENTITIES = (
    ("yes", "yes@example.com", "yes"),
    ("0755", "0755@example.com", "0755"),
    ("null", "null@example.com", "null"),
    ("1e3", "1e3@example.com", "1e3"),
    ("~", "~@example.com", "1.5"),
    ("Robert \"Bobby\" O'Brien; Jr", "bobby@example.com", "on"),
)
# Debian package names YAML reads as numbers, booleans or null (2048 and 0xffff are real ones).
PACKAGES = ["2048", "0xffff", "yes", "null", "1.5", "jq"]
SECRETS = {"remote-key": generate_ed25519("remote")[0], "token": "0755"}
CLUSTER = {"kubernetes": {"kubeconfig": "~/.kube/config", "node_address": "192.0.2.10"}}  # for kubernetes agents


def variants() -> dict[str, tuple[AgentSpec, Optional[str]]]:
    """Every backend x credential kind x egress mode x objects, cycling identities and packages."""
    found = {}
    dimensions = itertools.product(BACKENDS, CREDENTIALS, EGRESS, REFERENCES)
    for index, (backend, credential, egress, reference) in enumerate(dimensions):
        name, email, branch = IDENTITIES[index % len(IDENTITIES)]
        raw = agent(backend=backend, identity={"name": name, "email": email}, branch=branch,
                    packages=PACKAGES if index % 3 else [], **CREDENTIALS[credential], **EGRESS[egress])
        spec = load({"agents": [raw], **CLUSTER}, SECRETS).agents[0]
        found[f"{backend}-{credential}-{egress}-{reference}-{name}"] = (spec, REFERENCES[reference])
    return found


VARIANTS = variants()


def keys_for(spec: AgentSpec) -> AgentKeys:
    host_private, host_public = generate_ed25519("host")
    ssh_remote = spec.remote is not None and spec.remote.scheme == "ssh"
    return AgentKeys(
        operator_public_key=generate_ed25519("operator")[1],
        host_private_key=host_private,
        host_public_key=host_public,
        remote_private_key=(spec.credential.secret or generate_ed25519("remote")[0]) if ssh_remote else None,
        https_token=spec.credential.secret if spec.credential.kind == "https_token" else None,
    )


class YamlCppEmitter(yaml.emitter.Emitter):
    """Chooses a scalar's style as yaml-cpp's emitter does by default: plain wherever YAML's
    syntax allows it (whatever type the plain text then reads as), double-quoted elsewhere."""

    def choose_scalar_style(self) -> str:
        if self.analysis is None:
            self.analysis = self.analyze_scalar(self.event.value)
        allowed = self.analysis.allow_flow_plain if self.flow_level else self.analysis.allow_block_plain
        if allowed and not (self.simple_key_context and (self.analysis.empty or self.analysis.multiline)):
            return ""
        return '"'


def drop_quotes(document: str) -> str:
    """`document` as Multipass hands it to cloud-init: loaded and dumped by yaml-cpp, which keeps
    each scalar's text and explicit tag (`!!str`) but forgets its quotes; comments are lost and
    the daemon writes the header again."""
    events = []
    for event in yaml.parse(document):
        if isinstance(event, yaml.ScalarEvent):
            explicit = event.tag not in (None, "!")
            event = yaml.ScalarEvent(event.anchor, event.tag if explicit else None,
                                     (not explicit, not explicit), event.value)
        events.append(event)
    return "#cloud-config\n" + yaml.emit(events, Dumper=YamlCppEmitter, width=1 << 30, allow_unicode=True)


def cloud_init_reads(documents: list[str]) -> list[dict[str, Any]]:
    """What cloud-init's loader and schema checker make of each document (one process)."""
    try:
        done = subprocess.run([CLOUD_INIT_PYTHON, str(READER)], input=json.dumps(documents),
                              capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.fail(f"{CLOUD_INIT_PYTHON} is missing: install cloud-init (scripts/setup does)")
    if done.returncode != 0:
        pytest.fail(f"cloud-init could not read the documents (is it installed? scripts/setup "
                    f"installs it: apt-get install cloud-init):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where `after` is not exactly `before`, type included (True is not 1, "1" is not 1)."""
    if type(before) is not type(after):
        return [f"{path or '/'}: {before!r} became {after!r}"]
    if isinstance(before, dict):
        return [found for key in sorted(before.keys() | after.keys())
                for found in differences(before.get(key), after.get(key), f"{path}/{key}")]
    if isinstance(before, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items became {len(after)}"]
        return [found for index, pair in enumerate(zip(before, after))
                for found in differences(*pair, f"{path}/{index}")]
    return [] if before == after else [f"{path}: {before!r} became {after!r}"]


@pytest.fixture(scope="module")
def read_back() -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """Per variant: cloud-init's reading of the rendered document and of the same document after
    drop_quotes, and that re-written text."""
    rendered = {name: render_cloud_config(spec, keys_for(spec), reference)
                for name, (spec, reference) in VARIANTS.items()}
    rewritten = {name: drop_quotes(text) for name, text in rendered.items()}
    readings = cloud_init_reads([*rendered.values(), *rewritten.values()])
    originals, after = readings[:len(rendered)], readings[len(rendered):]
    return {name: (original, again, rewritten[name])
            for name, original, again in zip(rendered, originals, after)}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_document_means_the_same_after_multipass_drops_its_quotes(read_back, variant: str):
    original, again, rewritten = read_back[variant]
    assert original["problems"] == [], original["problems"]
    changed = differences(original["config"], again["config"])
    assert changed == [], "\n".join(changed)
    assert again["problems"] == [], again["problems"]


def test_every_backend_credential_kind_egress_mode_and_name_is_covered():
    specs = [spec for spec, _ in VARIANTS.values()]
    assert {spec.backend for spec in specs} == set(BACKENDS)
    assert {spec.credential.kind for spec in specs if spec.remote} == {"generate", "ssh_key", "https_token"}
    assert {spec.egress for spec in specs} == {"restricted", "open"}
    assert {spec.identity.name for spec in specs} == {name for name, _, _ in IDENTITIES}
    assert {reference for _, reference in VARIANTS.values()} == {None, SHARED_OBJECTS}


def test_the_round_trip_retypes_quoted_scalars_and_keeps_explicit_tags():
    # The check above could pass vacuously if drop_quotes kept quotes or the loader ignored them.
    document = ('#cloud-config\nmode: "0755"\nflag: "yes"\nnothing: "~"\nempty: ""\nfloat: "1.5"\n'
                "tagged: !!str 0755\nblock: |\n  0755\n")
    (before, after) = cloud_init_reads([document, drop_quotes(document)])
    assert before["config"] == {"mode": "0755", "flag": "yes", "nothing": "~", "empty": "",
                                "float": "1.5", "tagged": "0755", "block": "0755\n"}
    assert after["config"] == {"mode": 493, "flag": True, "nothing": None, "empty": None,
                               "float": 1.5, "tagged": "0755", "block": "0755\n"}


def test_schema_checker_rejects_what_the_round_trip_would_have_broken():
    # A write_files mode that became a number, as "0644" would: cloud-init's checker says so.
    (reading,) = cloud_init_reads(["#cloud-config\nwrite_files:\n- path: /x\n  permissions: 0644\n"])
    assert reading["config"]["write_files"][0]["permissions"] == 420
    assert reading["problems"] and "permissions" in reading["problems"][0]
