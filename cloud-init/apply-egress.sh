#!/bin/sh
# Apply this agent's egress policy (components/egress.py wrote the files in /etc/agentfleet):
# the firewall table (egress.nft) with the machine's name servers, and the resolver that answers
# only allowed names (/usr/local/lib/agentfleet/resolver) and records what the policy refuses in
# /var/log/agentfleet/egress/denied.jsonl (root's: the agent user reads it, cannot change it). Without
# egress.nft the egress is open: the table and the resolver are removed. Runs as root at every
# boot, before sshd admits anyone, and again after every in-place update; safe to run any number
# of times. The agent user has no capability to change any of it. In Docker it runs in the agent's
# policy container (images/agentfleet-policy), which holds the network namespace the agent joins.
set -eu
conf=/etc/agentfleet
run=/run/agentfleet
resolver=/usr/local/lib/agentfleet/resolver
recorder=/usr/local/lib/agentfleet/agentfleet_denied.py
log=/var/log/agentfleet/resolver.log
unit=agentfleet-resolver

install -d -m 0700 "$run"
install -d -o root -g root -m 0755 /var/log/agentfleet

# Earlier versions of agentfleet applied the policy with iptables: remove that chain.
for tool in iptables ip6tables; do
    if command -v "$tool" >/dev/null 2>&1 && "$tool" -n -L AGENTFLEET-EGRESS >/dev/null 2>&1; then
        while "$tool" -D OUTPUT -j AGENTFLEET-EGRESS 2>/dev/null; do :; done
        "$tool" -F AGENTFLEET-EGRESS && "$tool" -X AGENTFLEET-EGRESS
    fi
done

running() {  # running PIDFILE: the pid in it, if that process runs the resolver
    pid=$(cat "$1" 2>/dev/null) && grep -qa "$resolver" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

stop_resolver() {
    if [ -d /run/systemd/system ]; then
        systemctl stop "$unit" 2>/dev/null || true
    fi
    for pidfile in "$run/resolver-loop.pid" "$run/resolver.pid"; do
        if pid=$(running "$pidfile"); then
            kill "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

# A machine with a service manager (a VM) loads the table again at every boot before sshd starts,
# without name servers (so DNS is refused until this script runs in cloud-init's final stage):
# nobody logs in to open egress, and every connection is tracked from its first packet. A
# container runs this script before its sshd starts anyway.
early=/etc/systemd/system/agentfleet-egress-early.service
if [ -d /run/systemd/system ]; then
    cat >"$early.new" <<UNIT
[Unit]
Description=agentfleet: the agent's egress policy, before anyone can log in
DefaultDependencies=no
After=local-fs.target
Before=ssh.service ssh.socket sshd.service
ConditionPathExists=$conf/egress.nft

[Service]
Type=oneshot
ExecStart=/bin/sh -c '{ echo "table inet agentfleet"; echo "delete table inet agentfleet"; cat $conf/egress.nft; } | nft -f -'

[Install]
WantedBy=multi-user.target
UNIT
    if cmp -s "$early.new" "$early"; then
        rm "$early.new"
    else
        mv "$early.new" "$early"
        systemctl daemon-reload
        systemctl enable --quiet agentfleet-egress-early.service
    fi
fi

if [ ! -e "$conf/egress.nft" ]; then
    nft delete table inet agentfleet 2>/dev/null || true
    stop_resolver
    exit 0
fi

# The machine's name servers; behind systemd-resolved's stub, the servers it forwards to.
# AGENTFLEET_RESOLV_CONF: a Docker policy container's copy, pinned before the agent (whose root may
# write the shared /etc/resolv.conf) runs anything in its network namespace.
nameservers=$(awk '$1 == "nameserver" {print $2}' "${AGENTFLEET_RESOLV_CONF:-/etc/resolv.conf}")
machine=$nameservers
if echo "$nameservers" | grep -qx '127\.0\.0\.5[34]' && [ -e /run/systemd/resolve/resolv.conf ]; then
    machine=$(awk '$1 == "nameserver" {print $2}' /run/systemd/resolve/resolv.conf)
fi
upstreams=$(cat "$conf/dns-servers" 2>/dev/null || true)
[ -n "$upstreams" ] || upstreams=$machine
printf '%s\n' $upstreams >"$run/dns-upstreams.new" && mv "$run/dns-upstreams.new" "$run/dns-upstreams"

elements() {  # elements SET4 SET6 ADDRESS...: nft commands adding each address to its family's set
    set4=$1 set6=$2
    shift 2
    for address in "$@"; do
        case $address in
            *:*) echo "add element inet agentfleet $set6 { $address }" ;;
            *) echo "add element inet agentfleet $set4 { $address }" ;;
        esac
    done
}

# One transaction: the old table (if any) goes, the new one comes with its name servers.
# shellcheck disable=SC2086  # word splitting of the address lists is meant
{
    echo "table inet agentfleet"
    echo "delete table inet agentfleet"
    cat "$conf/egress.nft"
    elements nameservers4 nameservers6 $nameservers
    elements upstreams4 upstreams6 $upstreams
} | nft -f -

# The resolver reads the policy again by itself when it changed; start it where it does not run,
# or runs other code than the files now hold (an in-place update of agentfleet).
code=$(cat "$resolver" "$recorder" 2>/dev/null | sha256sum)
if ! running "$run/resolver.pid" >/dev/null || [ "$(cat "$run/resolver.code" 2>/dev/null)" != "$code" ]; then
    stop_resolver
    echo "$code" >"$run/resolver.code"
    if [ -d /run/systemd/system ]; then
        systemctl reset-failed "$unit" 2>/dev/null || true
        systemd-run --quiet --collect --unit "$unit" --property Restart=always \
            --property "StandardError=append:$log" python3 "$resolver"
    else
        # No service manager (a container): a loop of its own starts it again if it ever ends.
        setsid sh -c 'echo $$ >"$2"; while :; do python3 "$0" 2>>"$1"; sleep 1; done' \
            "$resolver" "$log" "$run/resolver-loop.pid" </dev/null >/dev/null 2>&1 &
    fi
    tries=0
    until running "$run/resolver.pid" >/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ]; then
            echo "agentfleet egress: the resolver did not start (see $log)" >&2
            exit 1
        fi
        sleep 0.05
    done
fi
