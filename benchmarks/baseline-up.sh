#!/usr/bin/env bash
# The baseline of the bring-up benchmark: one Docker example bottle brought up by
# hand, the way someone would without bot-bottle - the same containers, network,
# config and rules as the docker_bottle_example role, no checks, no idempotence,
# no read-back. The config files are written beforehand (by the benchmark runner,
# with the same compiler), so this times only the Docker work.
#
#   baseline-up.sh NAME SUBNET RESOLVER_IP HOLDER_IP EGRESS_NETWORK IMAGE AGENT_IMAGE DIR
#   baseline-down.sh NAME
set -euo pipefail
name=$1 subnet=$2 resolver_ip=$3 holder_ip=$4 egress=$5 image=$6 agent_image=$7 dir=$8

docker network create --internal --subnet "$subnet" "bb-$name" >/dev/null
docker run -d --name "bb-$name-resolver" --network "bb-$name" --ip "$resolver_ip" \
  --dns 127.0.0.1 --cap-drop ALL --cap-add NET_BIND_SERVICE --cap-add SETGID --cap-add SETUID \
  --security-opt no-new-privileges:true \
  -v "$dir/dnsmasq.conf:/etc/bottle/dnsmasq.conf:ro" -v "$dir/log:/var/log/bottle" \
  "$image" dnsmasq --keep-in-foreground --conf-file=/etc/bottle/dnsmasq.conf >/dev/null
docker network connect "$egress" "bb-$name-resolver"
docker run -d --name "bb-$name-net" --network "bb-$name" --ip "$holder_ip" --dns "$resolver_ip" \
  --cap-drop ALL --security-opt no-new-privileges:true \
  -v "$dir/resolv.conf:/etc/resolv.conf:ro" "$image" sleep infinity >/dev/null
docker run --rm --network "container:bb-$name-net" --cap-drop ALL --cap-add NET_ADMIN \
  --cap-add NET_RAW -v "$dir:/rules:ro" "$image" \
  sh -ec "iptables-restore /rules/rules.ipv4 && ip6tables-restore /rules/rules.ipv6"
docker run -d --name "bb-$name" --network "container:bb-$name-net" --cap-drop ALL \
  --security-opt no-new-privileges:true -v "$dir/resolv.conf:/etc/resolv.conf:ro" \
  "$agent_image" sleep infinity >/dev/null
