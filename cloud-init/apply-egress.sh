#!/bin/sh
# Apply this agent's egress policy (/etc/agentfleet/egress.conf, one "host port" per line):
# only loopback, replies to inbound connections, name resolution and the allowed host:port pairs
# may leave the machine; everything else is rejected at once. Runs as root at every boot, before
# sshd admits anyone. The agent user has no capability to change these rules.
set -eu
chain=AGENTFLEET-EGRESS
policy=/etc/agentfleet/egress.conf

family() { case $1 in *:*) echo ip6tables ;; *) echo iptables ;; esac; }

for tool in iptables ip6tables; do
    $tool -N "$chain" 2>/dev/null || $tool -F "$chain"
    $tool -C OUTPUT -j "$chain" 2>/dev/null || $tool -I OUTPUT -j "$chain"
    $tool -A "$chain" -o lo -j ACCEPT
    $tool -A "$chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
done
for resolver in $(awk '$1 == "nameserver" {print $2}' /etc/resolv.conf); do
    for protocol in udp tcp; do
        "$(family "$resolver")" -A "$chain" -d "$resolver" -p "$protocol" --dport 53 -j ACCEPT
    done
done
while read -r host port; do
    [ -n "$host" ] || continue
    addresses=$(getent ahosts "$host" | awk '{print $1}' | sort -u)
    [ -n "$addresses" ] || echo "agentfleet egress: $host does not resolve; it stays unreachable" >&2
    for address in $addresses; do
        "$(family "$address")" -A "$chain" -d "$address" -p tcp --dport "$port" -j ACCEPT
    done
done < "$policy"
for tool in iptables ip6tables; do
    $tool -A "$chain" -j REJECT
done
