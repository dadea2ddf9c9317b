#!/bin/sh
# Clone the agent's remote into its workspace on first boot, never over existing work.
# The remote, branch and workspace come from the agent's own git config (set by cloud-init).
set -u
remote=$(git config --global agentfleet.remote) || exit 0
branch=$(git config --global agentfleet.branch)
workspace=$(git config --global agentfleet.workspace)
[ -d "$workspace/.git" ] && exit 0
if ! git clone --quiet "$remote" "$workspace"; then
    echo "agentfleet: could not clone $remote; the workspace stays empty (run 'agentfleet doctor')" >&2
    exit 0
fi
cd "$workspace" && { git checkout --quiet "$branch" 2>/dev/null || git checkout --quiet -b "$branch"; }
