#!/usr/bin/env bash
# Fetch the offline checkers that tests/deploy/test_deploy_*.py run on deploy/:
#   promtool           from Debian's `prometheus`: checks the rule and scrape files with
#                      Prometheus's own parser and runs the alert unit tests;
#   compose_spec.json  from Debian's `docker-compose`: the Compose Specification's schema.
# The packages are downloaded and unpacked into DIR, not installed: installing `prometheus`
# would register a server with init, and nothing else on the machine is touched.
#
#   scripts/deploy-tools.sh [DIR]      (default .cache/deploy-tools), idempotent; prints DIR
set -euo pipefail

dir=${1:-.cache/deploy-tools}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if [[ -x $dir/promtool && -f $dir/compose_spec.json ]]; then
    echo "$dir"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `apt-get download` needs package lists; on a fresh machine they may be empty.
if ! apt-cache show prometheus >/dev/null 2>&1 || ! apt-cache show docker-compose >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "apt package lists are empty and refreshing them needs root: apt-get update" >&2
        exit 1
    fi
    apt-get update -qq >/dev/null
fi
(cd "$work" && apt-get download prometheus docker-compose >/dev/null 2>"$work/download.log") \
    || { cat "$work/download.log" >&2; exit 1; }

for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done
install -m 0755 "$work/root/usr/bin/promtool" "$dir/promtool"
install -m 0644 "$work/root/usr/lib/python3/dist-packages/compose/config/compose_spec.json" \
    "$dir/compose_spec.json"
"$dir/promtool" --version 2>&1 | head -n 1 >"$dir/VERSIONS"
dpkg-deb -f "$work"/docker-compose_*.deb Version | sed 's/^/docker-compose /' >>"$dir/VERSIONS"
echo "$dir"
