#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests: the multi-replica catalogue test needs a real
# PostgreSQL, and CI machines start with none running.
#
#   scripts/postgres-test.sh start PORT [DIR]   install if missing, start, print the URL
#   scripts/postgres-test.sh stop PORT [DIR]    stop the server and delete DIR
#   scripts/postgres-test.sh url PORT           print the URL only
#
# DIR defaults to /tmp/lora-gateway-pg-PORT. The server listens on 127.0.0.1 only, runs as
# a non-root user (PostgreSQL refuses root), and trades durability for speed (fsync off):
# it holds test data and nothing else. The URL is in the form LORA_GATEWAY_DATABASE_URL takes.
set -euo pipefail

PG_USER=lora
PG_PASSWORD=lora-test
PG_DB=lora
MARKER=.lora-gateway-postgres-test

usage() {
    echo "usage: $0 start|stop|url PORT [DIR]" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
port=$2
dir=${3:-/tmp/lora-gateway-pg-$port}
[[ $port =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 65535)) || {
    echo "PORT must be a number from 1024 to 65535, not '$port'" >&2
    exit 2
}
url="postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"

# Only a folder this script made (it holds the marker) is ever deleted.
remove_dir() {
    [[ -e $dir ]] || return 0
    if [[ ! -f $dir/$MARKER ]]; then
        echo "$dir exists and was not made by $0; refusing to delete it" >&2
        exit 1
    fi
    rm -rf "$dir"
}

pg_bindir() {
    # The newest installed major version; Debian keeps each under /usr/lib/postgresql/N/bin.
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/initdb ]] && echo "$d"
}

install_postgres() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "PostgreSQL is not installed and installing it needs root: apt-get install postgresql" >&2
        exit 1
    fi
    echo "installing Debian's postgresql (apt-get update, then apt-get install)..." >&2
    local log
    log=$(mktemp)
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; } \
        >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
}

# Run a command as the cluster's owner: ourselves, or the 'postgres' account when root.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin
    bin=$(pg_bindir) || true
    if [[ -z $bin ]]; then
        install_postgres
        bin=$(pg_bindir) || { echo "initdb not found after install" >&2; exit 1; }
    fi
    if [[ -f $dir/data/postmaster.pid ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "$url"
        return
    fi
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port on 127.0.0.1 is already in use" >&2
        exit 1
    fi
    remove_dir
    mkdir -p "$dir"
    touch "$dir/$MARKER"
    if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$dir"; fi
    as_owner sh -c "umask 077; printf '%s\n' '$PG_PASSWORD' > '$dir/pwfile'"
    # Password auth over TCP, as in production; trust only on the private socket directory.
    as_owner "$bin/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$dir/pwfile" \
        --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=200" >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U "$PG_USER" "$PG_DB"
    echo "$url"
}

stop() {
    local bin
    bin=$(pg_bindir) || true
    if [[ -n $bin && -f $dir/data/postmaster.pid ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    remove_dir
}

case $cmd in
    start) start ;;
    stop) stop ;;
    url) echo "$url" ;;
    *) usage ;;
esac
