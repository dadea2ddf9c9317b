"""Changing a running agent container in place: its new cloud-config uploaded as a root-only file
(the Engine API's archive upload, a request body) and applied by components/reapply.py's script
in a root exec. The container, its processes, its endpoint and its host key stay as they are."""

from __future__ import annotations

from docker.errors import APIError

from components.backends.docker.driver import DockerError, tar_of
from components.process import tail
from components.reapply import DOCUMENT_PATH, update_plan


def apply_in_place(container, user_data: str) -> None:
    """Apply user_data to the running container; nothing happens when it is applied already."""
    directory, filename = DOCUMENT_PATH.rsplit("/", 1)
    parent, leaf = directory.rsplit("/", 1)
    try:
        container.put_archive(parent, tar_of({f"{leaf}/{filename}": (user_data.encode(), 0o600)}, {leaf: 0o700}))
        status, output = container.exec_run(update_plan(user_data).argv(DOCUMENT_PATH, scrub=True), user="root")
    except APIError as error:
        raise DockerError(f"container {container.name}: applying the new cloud-config failed: "
                          f"{error.explanation}") from None
    if status != 0:
        raise DockerError(f"container {container.name}: applying the new cloud-config failed "
                          f"(exit {status}):\n{tail(output.decode(errors='replace'))}")
