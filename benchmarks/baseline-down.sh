#!/usr/bin/env bash
# Remove what baseline-up.sh NAME made.
set -uo pipefail
name=$1
docker rm -f "bb-$name" "bb-$name-net" "bb-$name-resolver" >/dev/null 2>&1
docker network rm "bb-$name" >/dev/null 2>&1
exit 0
