#!/bin/sh
# Prepare the agent's workspace on first boot, never over existing work: clone its remote, or,
# with no remote, start a repository on its branch whose first commit is the agent's own.
# The remote, branch, workspace and shared objects come from the agent's git config (cloud-init).
set -u
branch=$(git config --global agentfleet.branch)
workspace=$(git config --global agentfleet.workspace)
[ -d "$workspace/.git" ] && exit 0
if ! remote=$(git config --global agentfleet.remote); then
    git init --quiet --initial-branch "$branch" "$workspace" &&
        git -C "$workspace" commit --quiet --allow-empty --message "Start $branch"
    exit
fi
# The machine's maker may gate the clone, to keep the fleet's connections to the remote host under
# `forge_connections` (agentfleet/contract.py CLONE_GATE): wait for its word, and tell it when done.
# Only the first run waits: a later one (`agentfleet clone`) is gated by the client.
gate=/var/lib/agentfleet-clone-gate
if rm "$gate/required" 2>/dev/null; then
    trap 'touch "$gate/done"' EXIT
    touch "$gate/waiting"
    tries=0
    until [ -e "$gate/admitted" ]; do
        if [ "$tries" -ge 18000 ]; then
            echo "agentfleet: not admitted to clone $remote within 30 minutes; the workspace stays empty (run 'agentfleet clone')" >&2
            exit 0
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
fi
# A fleet with shared objects mounts a read-only mirror: borrow its objects (git alternates)
# instead of copying them; without the mirror the clone is a full one.
reference=$(git config --global agentfleet.reference) && set -- --reference-if-able "$reference"
# A lean clone (`clone:`): `depth` commits of every branch, not only the default one (the agent's
# own branch may exist on the remote already); `filter` leaves objects there until git needs them.
depth=$(git config --global agentfleet.depth) && set -- "$@" --depth "$depth" --no-single-branch
filter=$(git config --global agentfleet.filter) && set -- "$@" --filter "$filter"
if ! git clone --quiet "$@" -- "$remote" "$workspace"; then
    echo "agentfleet: could not clone $remote; the workspace stays empty (run 'agentfleet doctor')" >&2
    exit 0
fi
# `--`: the branch is a branch, never a file of the same name.
cd "$workspace" && { git checkout --quiet "$branch" -- 2>/dev/null || git checkout --quiet -b "$branch"; }
