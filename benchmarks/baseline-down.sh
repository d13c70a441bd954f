#!/usr/bin/env bash
# Remove what baseline-up.sh NAME ... STATE_DIR made: the removals of one
# `botbottle.bottle.docker_bottle` call with state absent - the agent, the holder and
# the resolver (force: killed, not stopped), the network, the state folder. Missing
# pieces are no error (a half-made bottle goes too), as with the module.
#
# Not done here: the module's read of what exists first (inspects, and an iptables-save
# exec in a running holder) - it decides what to remove, it checks nothing.
# `docker rm -f` with three names is what a script writer types; the CLI removes them
# concurrently, where the module removes them one after another.
#
#   baseline-down.sh NAME STATE_DIR
set -uo pipefail
name=$1 dir=$2
docker rm -f "$name" "$name-net" "$name-resolver" >/dev/null 2>&1
docker network rm "$name" >/dev/null 2>&1
rm -rf "$dir"
exit 0
