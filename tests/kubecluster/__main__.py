"""Start a throwaway single-node cluster by hand, as the tests do; Ctrl-C stops it.

    python -m tests.kubecluster [--image agentfleet/agent:…] [--root DIR]

It prints the admin kubeconfig to use (`export KUBECONFIG=…`) and, at the end, how long it took
to come up and go down. The host is left as it was (see tests/kubecluster/cluster.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from tests.kubecluster.cluster import Cluster, ClusterError, remove_tree
from tests.kubecluster.host_state import HostState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubecluster", description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a Docker image to import into the cluster (e.g. the agent image)")
    parser.add_argument("--root", type=Path, help="where its files go (default: a new directory in /tmp, removed at the end)")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="agentfleet-kube-"))
    before = HostState.capture()
    cluster = Cluster(root, image=args.image)
    # Both stop it the same way, also when started in the background (where SIGINT is ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with cluster:
            print(f"cluster up in {cluster.timings['start_s']:.1f} s; node {cluster.node_ip}\n"
                  f"export KUBECONFIG={cluster.kubeconfig}\nCtrl-C stops it", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.root is None:
            remove_tree(root)
    print(f"cluster down in {cluster.timings.get('stop_s', 0):.1f} s")
    changed = before.differences(HostState.capture())
    for line in changed:
        print(f"host changed: {line}", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
