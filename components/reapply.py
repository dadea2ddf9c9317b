"""Applying an agent's cloud-config to its running machine: the one way every backend changes an
agent in place, and the way Lima applies it the first time.

Why cloud-init itself, module by module: the files an in-place change touches (the egress policy,
the identity in ~/.gitconfig, the remote credential, known_hosts) are `write_files` entries, so
`cloud-init --file <document> modules --mode final` with exactly those modules writes them as a
first boot would, and the per-boot scripts (the egress policy) then apply them. Nothing else is
touched: sshd, the user's processes and shells, the workspace and the host keys stay as they are.
What cannot change in place (image, ports, host key, packages: installing needs the network the
policy closes) is a replacing field of the machine, not part of this.

Each backend carries the document its own way, never in argv or the environment: Docker uploads it
into the container as a root-only file (the Engine API's request body), Lima and Multipass send it
on the stdin of `limactl shell` / `multipass exec`. The script (SCRIPT, run by root with `sh -c`):
- does nothing when the document is the one applied last (or the one the machine booted from),
  so a backend may call it on every update;
- removes the optional files (OPTIONAL_FILES) the new document no longer has: a replaced
  credential or a lifted policy does not stay behind;
- where the machine booted from the document (`scrub`: Docker's NoCloud seed, Multipass'
  user-data), replaces cloud-init's copies of it, so the old credential is gone from the disk;
- removes its own copy of the document when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from components.cloudinit import OPTIONAL_FILES
from components.spec import AgentSpec

# The modules whose input an in-place change touches: every file of the document, written again.
UPDATE_MODULES = ("write_files", "write_files_deferred")
# A claim of a warm pool member (components/backends/docker/pool.py) delivers what its boot left
# out: the user's operator key (users_groups), the pinned host key (ssh), the files, and the
# first clone (runcmd writes it, scripts_user runs it). sshd then reloads the host key.
CLAIM_MODULES = ("write_files", "users_groups", "ssh", "write_files_deferred", "runcmd", "scripts_user")
PER_BOOT_DIR = "/var/lib/cloud/scripts/per-boot/"
DOCUMENT_PATH = "/run/agentfleet/update.yaml"  # where Docker uploads it (root only)


def in_place_fields(agent: AgentSpec) -> dict[str, list[str]]:
    """What of the cloud-config cannot change in place, as fields of the machine that replace it
    when they change: the packages (installing needs the network a restricted policy closes).
    Absent when empty, so machines made before this field existed keep their inputs."""
    return {"packages": list(agent.packages)} if agent.packages else {}


def steps_document(modules: Sequence[str]) -> str:
    """The cloud-config fragment that makes `cloud-init modules --mode final` run exactly
    these modules, each whatever it ran before (JSON is YAML)."""
    return json.dumps({"cloud_final_modules": [[module, "always"] for module in modules]})


def per_boot_scripts(document: dict) -> list[str]:
    """The per-boot scripts the document installs, in the order cloud-init runs them."""
    files = document.get("write_files") or []
    return sorted((f["path"] for f in files if str(f.get("path", "")).startswith(PER_BOOT_DIR)),
                  key=lambda path: path.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Plan:
    """What the script does with one document: the modules to run (a steps document), the
    optional files to remove first, the per-boot scripts to run afterwards."""

    steps: str
    remove: tuple[str, ...]
    scripts: tuple[str, ...]

    def argv(self, document: str, scrub: bool) -> list[str]:
        """`sh -c SCRIPT …` as root; `document` is the path of the uploaded document, or "-"
        for stdin. Nothing secret: module names and paths."""
        return ["sh", "-c", SCRIPT, "agentfleet-apply", document, "scrub" if scrub else "keep",
                self.steps, str(len(self.remove)), *self.remove, *self.scripts]


def update_plan(user_data: str, modules: Sequence[str] = UPDATE_MODULES) -> Plan:
    """How to change a running agent to this document (with `modules`: CLAIM_MODULES for a claim)."""
    document = yaml.safe_load(user_data) or {}
    written = {f.get("path") for f in document.get("write_files") or []}
    return Plan(steps=steps_document(modules),
                remove=tuple(path for path in OPTIONAL_FILES if path not in written),
                scripts=tuple(per_boot_scripts(document)))


# Shell lines for a script run over an SSH session that may predate the egress policy; the script
# sends a line over the session right after them (driver.py's boot wait uses them too). Why: the
# policy rejects what leaves the machine on connections netfilter has not seen as established, and
# netfilter tracks connections only once a rule asks for it. A session opened before that (Lima's
# SSH master connection, opened while the VM boots) is picked up mid-stream by the first packet
# seen afterwards: when that packet leaves the machine it is "new", and rejected once the policy
# is in place, and the host, waiting for output, sends nothing that would mend it, so the session
# hangs (measured: a `limactl shell` open across the boot's policy load never returned). Tracked
# now, the line's acknowledgement makes the session established before any policy applies; the
# policy replaces this table.
# Where root holds no NET_ADMIN (a Docker agent: its policy container applies the policy) there is
# nothing to track, and nft fails quietly.
TRACK_SESSION = r"""if command -v nft >/dev/null 2>&1 && ! nft list table inet agentfleet >/dev/null 2>&1; then
    nft -f - <<'TABLE' 2>/dev/null || true
table inet agentfleet {
    chain output { type filter hook output priority -150; policy accept; ct state established,related accept; }
}
TABLE
fi
"""


# Asks a resident cloud-init to apply the document; exits with its status, 125 when none listens.
CLAIM_CLIENT = """import socket, sys
client = socket.socket(socket.AF_UNIX)
try:
    client.connect(sys.argv[1])
except OSError:
    sys.exit(125)
client.sendall(" ".join(sys.argv[2:]).encode() + b"\\n")
sys.exit(int(client.makefile().readline() or 1))
"""

SCRIPT = r"""set -eu
document=$1 scrub=$2 steps=$3 count=$4
shift 4
dir=/run/agentfleet
state=/var/lib/agentfleet
claim='{claim}'
seed=/var/lib/cloud/seed/nocloud/user-data
install -d -m 0700 "$dir" "$state"
if [ "$document" = - ]; then
    document=$dir/apply.yaml
    (umask 077 && cat >"$document")
fi
trap 'rm -f "$document" "$dir/steps.yaml"' EXIT
digest=$(sha256sum <"$document" | cut -d" " -f1)
applied=$(cat "$state/applied.sha256" 2>/dev/null || { [ ! -e "$seed" ] || sha256sum <"$seed" | cut -d" " -f1; })
if [ "$digest" = "$applied" ]; then
    echo "agentfleet: the cloud-config is applied already" >&2
    exit 0
fi
{track}echo "agentfleet: applying the cloud-config" >&2
while [ "$count" -gt 0 ]; do
    rm -f "$1"
    shift
    count=$((count - 1))
done
printf '%s\n' "$steps" >"$dir/steps.yaml"
apply() {
    # A warm pool member's resident cloud-init (images/agentfleet-cloud-init) when it listens.
    if [ -S "$dir/claim.sock" ]; then
        status=0
        python3 -c "$claim" "$dir/claim.sock" "$document" "$dir/steps.yaml" "$dir/apply.log" || status=$?
        [ "$status" = 125 ] || return "$status"
    fi
    cloud-init --file "$document" --file "$dir/steps.yaml" modules --mode final >"$dir/apply.log" 2>&1
}
if ! apply; then
    tail -n 25 "$dir/apply.log" >&2
    echo "cloud-init could not apply the cloud-config (full log: $dir/apply.log in the machine)" >&2
    exit 1
fi
for script in "$@"; do
    "$script" >>"$dir/apply.log" 2>&1 || { tail -n 10 "$dir/apply.log" >&2; echo "$script failed" >&2; exit 1; }
done
if [ "$scrub" = scrub ]; then
    # The machine booted from an earlier document: cloud-init keeps copies of it. The seed takes
    # the new one; the copies are made again from it at the next boot.
    [ ! -e "$seed" ] || install -m 0600 "$document" "$seed"
    for instance in /var/lib/cloud/instances/*/; do
        rm -f "$instance/user-data.txt" "$instance/user-data.txt.i" "$instance/cloud-config.txt" "$instance/obj.pkl"
    done
fi
echo "$digest" >"$state/applied.sha256"
""".replace("{track}", TRACK_SESSION).replace("{claim}", CLAIM_CLIENT)
