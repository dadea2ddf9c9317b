# Make a fleet's shared objects: a volume holding `git clone --mirror` of the agents' remote,
# cloned by a throwaway container of the agent image. Agents mount it read-only and borrow its
# objects (git alternates), so N agents on one repository keep one copy of its history.
# Args: VOLUME CONTAINER KIND REMOTE KNOWN_HOSTS NETWORKS IMAGE [labels...]
# KIND is ssh_key or https_token (the key or token arrives on stdin, never in argv) or none.
# NETWORKS: the stack's network first, then the attached ones (space-separated).
# On failure the volume and the container are removed: nothing is left that Pulumi does not know.
set -eu
volume=$1 name=$2 kind=$3 remote=$4 known_hosts=$5 networks=$6 image=$7
shift 7
fail() {
    echo "shared objects: $1" >&2
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm -f "$volume" >/dev/null 2>&1 || true
    exit 1
}
# Runs in the throwaway container as root, without capabilities; writes the mirror to /mirror.
clone='set -eu
kind=$1 remote=$2 known_hosts=$3
set --
umask 077
credentials=$(mktemp -d)
case $kind in
    ssh_key)
        cat >"$credentials/key"
        printf "%s\n" "$known_hosts" >"$credentials/known_hosts"
        export GIT_SSH_COMMAND="ssh -i $credentials/key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$credentials/known_hosts"
        ;;
    https_token)
        host=${remote#https://}
        printf "https://x-access-token:%s@%s\n" "$(cat)" "${host%%/*}" >"$credentials/store"
        set -- -c "credential.helper=store --file=$credentials/store"
        ;;
esac
umask 022
git "$@" clone --mirror --quiet "$remote" /mirror
rm -rf "$credentials"'
first=${networks%% *}
docker volume create "$@" "$volume" >/dev/null
docker create -i --name "$name" "$@" --network "$first" \
    --mount "type=volume,src=$volume,dst=/mirror" \
    --cap-drop ALL --security-opt no-new-privileges \
    --entrypoint sh "$image" -c "$clone" clone "$kind" "$remote" "$known_hosts" >/dev/null \
    || fail "could not create the container that clones $remote"
for network in ${networks#"$first"}; do
    docker network connect "$network" "$name" || fail "could not join network $network"
done
docker start -ai "$name" || fail "git clone --mirror $remote failed (above)"
docker rm -f "$name" >/dev/null
