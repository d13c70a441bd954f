#!/usr/bin/env bash
# The baseline of the bring-up benchmark: one Docker example bottle brought up by hand
# with plain `docker` commands, doing what one `botbottle.bottle.docker_bottle` call
# (state started) does on a first converge - the same objects, the same hardening and
# the same checks, no more and no fewer:
#
#   1. the bottle's files into its state folder (dnsmasq.conf, resolv.conf, rules.ipv4,
#      rules.ipv6; rendered beforehand by the runner with the module's own functions, as
#      the module renders them in Python), and its log folder;
#   2. the internal network (fixed subnet and gateway, no IPv6);
#   3. the resolver: created on the bottle network (fixed address, --dns 127.0.0.1, every
#      capability dropped but NET_BIND_SERVICE/SETGID/SETUID, no-new-privileges, config
#      read-only, restart unless-stopped), joined to the egress network, started. Its own
#      start runs `dnsmasq --test` on the configuration, then dnsmasq;
#   4. its health, polled every 50 ms for up to 30 s: is it running (else fail), does
#      `dig @127.0.0.1` in it answer NXDOMAIN for a name that is not allowlisted;
#   5. the holder: its start script loads the rules (iptables-restore, ip6tables-restore),
#      seals the namespace (loopback alias) and setpriv's to nobody; NET_ADMIN/SETUID/SETGID
#      only, no-new-privileges, rules and resolv.conf read-only, SIGKILL to stop;
#   6. the read-back, polled every 50 ms for up to 10 s: is the holder running (else fail),
#      then iptables-save and ip6tables-save in its namespace must both carry the policy's
#      stamp and the loopback alias must be the seal;
#   7. the agent: the seal guard (the netutils image's static busybox, mounted read-only)
#      in front of its command, in the holder's namespace, every capability dropped,
#      no-new-privileges, an init, resolv.conf read-only.
#
# Not done here, because it is not a check of the bottle but the module's idempotence:
# the module first reads what exists (three container inspects, a network inspect, the
# network list, two image inspects, an iptables-save exec in a running holder, the
# files' digests) and plans from it. The static busybox is copied out of the image once
# by the runner beforehand, as the module caches it (state_dir/.tools) after its first run.
#
#   baseline-up.sh NAME SUBNET GATEWAY RESOLVER_IP HOLDER_IP EGRESS_NETWORK IMAGE \
#                  AGENT_IMAGE SOURCE_DIR STATE_DIR GUARD_BUSYBOX STAMP
#   baseline-down.sh NAME STATE_DIR
set -euo pipefail
name=$1 subnet=$2 gateway=$3 resolver_ip=$4 holder_ip=$5 egress=$6 image=$7 agent_image=$8
src=$9 dir=${10} guard=${11} stamp=${12}
seal=bot-bottle-sealed
# The module's own programs, word for word (tests/unit/test_bench.py compares them with
# module_utils/_docker_bottle.py): the resolver's start, the holder's start, the rules
# read-back, the agent's seal guard, the name the health check asks for.
resolver_start='dnsmasq --test -C /etc/bottle/dnsmasq.conf && exec dnsmasq --keep-in-foreground -C /etc/bottle/dnsmasq.conf'
holder_start='iptables-restore /rules/rules.ipv4 && ip6tables-restore /rules/rules.ipv6 && ip link set dev lo alias bot-bottle-sealed && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- sleep infinity'
read_rules="iptables-save -t filter; echo '### ipv6'; ip6tables-save -t filter; echo '### seal'; cat /sys/class/net/lo/ifalias"
seal_guard='b=/.bot-bottle/busybox; until read -r s < /sys/class/net/lo/ifalias && [ "$s" = '\''bot-bottle-sealed'\'' ]; do "$b" sleep 0.05; done; c=$1; shift; case $c in */*) ;; *) c=$("$b" which "$c") || { echo "bot-bottle seal guard: command not found on PATH" >&2; exit 127; };; esac; exec "$c" "$@"'
health_name=bot-bottle-health.invalid

fail() {
  echo "baseline-up: $*" >&2
  exit 1
}

# 1. files
mkdir -p "$dir/log"
chmod 0755 "$dir"
cp "$src/dnsmasq.conf" "$src/resolv.conf" "$src/rules.ipv4" "$src/rules.ipv6" "$dir/"

# 2. network
docker network create --driver bridge --internal --subnet "$subnet" --gateway "$gateway" \
  "$name" >/dev/null

# 3. resolver (checks its configuration with dnsmasq --test at every start)
docker create --pull never --name "$name-resolver" --network "$name" --ip "$resolver_ip" \
  --dns 127.0.0.1 --cap-drop ALL --cap-add NET_BIND_SERVICE --cap-add SETGID \
  --cap-add SETUID --security-opt no-new-privileges:true \
  --mount "type=bind,src=$dir,dst=/etc/bottle,readonly" \
  --mount "type=bind,src=$dir/log,dst=/var/log/bottle" \
  --restart unless-stopped --stop-timeout 2 "$image" sh -ec "$resolver_start" >/dev/null
docker network connect "$egress" "$name-resolver"
docker start "$name-resolver" >/dev/null

# 4. resolver health: NXDOMAIN for an unlisted name, polled
deadline=$((SECONDS + 30))
while :; do
  [ "$(docker inspect -f '{{.State.Running}}' "$name-resolver")" = true ] ||
    fail "the resolver exited: $(docker logs --tail 5 "$name-resolver" 2>&1)"
  answer=$(docker exec "$name-resolver" dig +time=1 +tries=1 @127.0.0.1 "$health_name" 2>&1) &&
    [[ $answer == *"status: NXDOMAIN"* ]] && break
  [ "$SECONDS" -le "$deadline" ] || fail "the resolver did not answer within 30 s"
  sleep 0.05
done

# 5. holder: loads the rules, seals, drops to nobody
docker run -d --pull never --name "$name-net" --network "$name" --ip "$holder_ip" \
  --dns "$resolver_ip" --cap-drop ALL --cap-add NET_ADMIN --cap-add SETUID --cap-add SETGID \
  --security-opt no-new-privileges:true \
  --mount "type=bind,src=$dir,dst=/rules,readonly" \
  --mount "type=bind,src=$dir/resolv.conf,dst=/etc/resolv.conf,readonly" \
  --restart no --stop-signal SIGKILL "$image" sh -ec "$holder_start" >/dev/null

# 6. read the rules back: the stamp in both families, and the seal
deadline=$((SECONDS + 10))
while :; do
  [ "$(docker inspect -f '{{.State.Running}}' "$name-net")" = true ] ||
    fail "the namespace holder exited before sealing: $(docker logs --tail 5 "$name-net" 2>&1)"
  dump=$(docker exec "$name-net" sh -c "$read_rules" 2>&1) || dump=""
  v4=${dump%%"### ipv6"*}
  rest=${dump#*"### ipv6"}
  v6=${rest%%"### seal"*}
  sealed=${rest#*"### seal"}
  sealed=${sealed#"${sealed%%[![:space:]]*}"}  # trimmed, as the module strips it
  sealed=${sealed%"${sealed##*[![:space:]]}"}
  if [[ $dump == *"### seal"* && $v4 == *"--comment \"$stamp\""* &&
    $v6 == *"--comment \"$stamp\""* && $sealed == "$seal" ]]; then
    break
  fi
  [ "$SECONDS" -le "$deadline" ] || fail "the rules read back are not the policy's ($stamp)"
  sleep 0.05
done

# 7. agent: seal guard in front of its command, in the holder's namespace
docker run -d --pull never --name "$name" --network "container:$name-net" --cap-drop ALL \
  --security-opt no-new-privileges:true --init \
  --mount "type=bind,src=$dir/resolv.conf,dst=/etc/resolv.conf,readonly" \
  --mount "type=bind,src=$guard,dst=/.bot-bottle/busybox,readonly" \
  --restart no --stop-timeout 2 --entrypoint /.bot-bottle/busybox "$agent_image" \
  sh -c "$seal_guard" bottle-seal-guard sleep infinity >/dev/null
