"""Changing a running agent container in place: its new cloud-config uploaded as a root-only file
(the Engine API's archive upload, a request body) and applied by components/reapply.py's script
in a root exec. The container, its processes, its endpoint and its host key stay as they are;
only a claimed warm pool member (pool.py) takes its agent's host key, and sshd reloads it."""

from __future__ import annotations

from collections.abc import Sequence

from docker.errors import APIError

from components.backends.docker.driver import DockerError, tar_of
from components.process import tail
from components.reapply import CLAIM_MODULES, DOCUMENT_PATH, UPDATE_MODULES, update_plan

# sshd is PID 1 of an agent container (images/agent-init): SIGHUP makes it execute itself again
# and load the host keys anew; sessions already open stay. It writes its pid file again once it
# listens, so the host key is probed only then (a probe meanwhile is reset).
RELOAD_SSHD = """rm -f /run/sshd.pid
kill -HUP 1
deadline=$(($(date +%s) + 20))
until [ -e /run/sshd.pid ]; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 124
    sleep 0.01
done"""


def apply_in_place(container, user_data: str, modules: Sequence[str] = UPDATE_MODULES) -> None:
    """Apply user_data to the running container; nothing happens when it is applied already."""
    directory, filename = DOCUMENT_PATH.rsplit("/", 1)
    parent, leaf = directory.rsplit("/", 1)
    try:
        container.put_archive(parent, tar_of({f"{leaf}/{filename}": (user_data.encode(), 0o600)}, {leaf: 0o700}))
        status, output = container.exec_run(update_plan(user_data, modules).argv(DOCUMENT_PATH, scrub=True),
                                            user="root")
    except APIError as error:
        raise DockerError(f"container {container.name}: applying the new cloud-config failed: "
                          f"{error.explanation}") from None
    if status != 0:
        raise DockerError(f"container {container.name}: applying the new cloud-config failed "
                          f"(exit {status}):\n{tail(output.decode(errors='replace'))}")


def claim_in_place(container, user_data: str) -> None:
    """Give a claimed warm pool member its agent's document (identity, keys, files, first clone)
    and have sshd offer the pinned host key."""
    apply_in_place(container, user_data, CLAIM_MODULES)
    status, output = container.exec_run(["sh", "-c", RELOAD_SSHD], user="root")
    if status != 0:
        raise DockerError(f"container {container.name}: sshd did not reload its host key (exit {status}): "
                          f"{output.decode(errors='replace').strip()}")
