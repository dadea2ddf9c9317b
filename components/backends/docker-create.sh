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
deadline=$(( $(date +%s) + timeout ))
# One exec delivers the seed, then waits inside the container until cloud-init's last stage has
# written its result and sshd listens (its pid file): polling there costs a `sleep`, polling from
# here would cost a `docker exec` (runc) each time, and an ssh-keyscan at sshd's door would fail.
status=0
result=$(docker exec -i "$name" sh -c '
    agentfleet-seed "$1" "$2" || exit
    until [ -e /run/cloud-init/result.json ] && [ -e /run/sshd.pid ]; do
        [ "$(date +%s)" -lt "$3" ] || exit 124
        sleep 0.05
    done
    cat /run/cloud-init/result.json' seed-and-wait "$instance" "$name" "$deadline") || status=$?
case $status in
    0) ;;
    124) fail "cloud-init and sshd did not finish starting within ${timeout}s" ;;
    *)
        [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || fail "stopped during cloud-init"
        fail "could not deliver the cloud-config seed (exit $status)"
        ;;
esac
case $result in
    *'"errors": []'*) ;;
    *)
        docker exec "$name" cloud-init status --long >&2 || true
        fail "cloud-init reported errors (above)"
        ;;
esac
key_type=${host_key%% *}
until ssh-keyscan -T 2 -t "${key_type#ssh-}" -p "$port" "$host" 2>/dev/null | grep -qF "$(echo "$host_key" | cut -d' ' -f1,2)"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "sshd on $host:$port did not offer the pinned host key within ${timeout}s"
    sleep 0.05
done
printf '{"host": "%s", "port": %s}\n' "$host" "$port"
