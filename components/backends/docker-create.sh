# Create one agent container and wait until it is ready; the cloud-config arrives on stdin.
# Args: NAME INSTANCE_ID HOST PORT HOST_PUBLIC_KEY TIMEOUT EXTRA_NETWORKS [docker create options...] IMAGE
# EXTRA_NETWORKS is a space-separated list joined after create (one --network per create is all
# that Docker engines before API 1.44 accept).
# Ready means: cloud-init finished without error and sshd on HOST:PORT offers the pinned host key.
# On any failure the half-made container is removed, so nothing is left that Pulumi does not know.
set -eu
name=$1 instance=$2 host=$3 port=$4 host_key=$5 timeout=$6 extra_networks=$7
shift 7
fail() {
    echo "agent container $name: $1" >&2
    docker logs --tail 30 "$name" >&2 2>&1 || true
    docker rm -f "$name" >/dev/null 2>&1 || true
    exit 1
}
docker create --name "$name" "$@" >/dev/null
for network in $extra_networks; do
    docker network connect "$network" "$name" || fail "could not join network $network"
done
docker start "$name" >/dev/null || fail "could not start"
docker exec -i "$name" agentfleet-seed "$instance" "$name" || fail "could not deliver the cloud-config seed"
deadline=$(( $(date +%s) + timeout ))
until docker exec "$name" test -e /run/cloud-init/result.json 2>/dev/null; do
    [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || fail "stopped during cloud-init"
    [ "$(date +%s)" -lt "$deadline" ] || fail "cloud-init did not finish within ${timeout}s"
    sleep 0.1
done
if ! docker exec "$name" cloud-init status >/dev/null 2>&1; then
    docker exec "$name" cloud-init status --long >&2 || true
    fail "cloud-init reported errors (above)"
fi
key_type=${host_key%% *}
until ssh-keyscan -T 2 -t "${key_type#ssh-}" -p "$port" "$host" 2>/dev/null | grep -qF "$(echo "$host_key" | cut -d' ' -f1,2)"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "sshd on $host:$port did not offer the pinned host key within ${timeout}s"
    sleep 0.1
done
printf '{"host": "%s", "port": %s}\n' "$host" "$port"
