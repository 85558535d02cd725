#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, for trying multi-node runs and `robolora submit` without
# cloud machines: a head node (job server on, no CPUs for work, as on a GPU cluster) and N worker
# nodes, each its own raylet as if on its own machine. Token authentication is on, as on a real
# cluster. Everything lives in one state directory, and `stop` ends only the processes started here
# (never `ray stop`, which would end every Ray cluster on the machine).
#
#   cluster/local_cluster.sh start [WORKERS [CPUS_PER_WORKER]]   # default: 2 workers of 1 CPU
#   eval "$(cluster/local_cluster.sh env)"                     # RAY_API_SERVER_ADDRESS, RAY_AUTH_TOKEN_PATH
#   robolora submit -- train --config examples/smollm2-135m.yaml --num-workers 2 \
#       --placement-strategy STRICT_SPREAD --output-dir "$PWD/models/local-cluster-run"
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop
#
# Settings (environment): ROBOLORA_LOCAL_CLUSTER (state directory, default /tmp/robolora-cluster),
# RAY (the ray command, default: ray on PATH), HEAD_CPUS (default 0), DRAIN_S (seconds a stopping node
# lets running work finish, default 3).
set -euo pipefail

STATE=${ROBOLORA_LOCAL_CLUSTER:-/tmp/robolora-cluster}
RAY=${RAY:-ray}
PYTHON=$(dirname "$(command -v "$RAY")")/python
[ -x "$PYTHON" ] || PYTHON=python3

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Start one `ray start --block` in its own session: its children stay in its process group, and
# SIGTERM to it shuts its node down cleanly.
start_node() {
    local name=$1
    shift
    # PATH: a job's `robolora ...` entrypoint runs with the node's PATH, so put this environment's scripts first.
    # A stopped node drains for at most DRAIN_S seconds (Ray's default, 30 s, waits on Ray Train's idle actors).
    PATH="$(dirname "$(command -v "$RAY")"):$PATH" RAY_TMPDIR="$STATE/tmp" RAY_AUTH_MODE=token \
        RAY_AUTH_TOKEN_PATH="$STATE/auth_token" RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${DRAIN_S:-3}" \
        setsid "$RAY" start --block --disable-usage-stats "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

wait_for() {  # wait_for LOG: until the node reports it is up, or its process ends
    local log=$1 pidfile=${1%.log}.pid
    for _ in $(seq 1 180); do
        grep -q "block forever" "$log" 2>/dev/null && return 0
        alive "$pidfile" || { echo "node failed to start; see $log" >&2; tail -n 20 "$log" >&2; return 1; }
        sleep 1
    done
    echo "node did not start within 180 s; see $log" >&2
    return 1
}

cmd_start() {
    local workers=${1:-2} cpus=${2:-1}
    if alive "$STATE/head.pid"; then
        echo "already running (state in $STATE); \`$0 stop\` first" >&2
        exit 1
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE/tmp"
    chmod 700 "$STATE"
    # The cluster's shared secret; every node and every client reads it from this file.
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/auth_token")
    local gcs dash
    gcs=$(free_port)
    dash=$(free_port)
    echo "127.0.0.1:$gcs" >"$STATE/gcs_address"
    echo "http://127.0.0.1:$dash" >"$STATE/dashboard_url"
    start_node head --head --port="$gcs" --num-cpus="${HEAD_CPUS:-0}" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
        --dashboard-agent-listen-port="$(free_port)" --ray-client-server-port="$(free_port)"
    wait_for "$STATE/head.log" || { cmd_stop >/dev/null; exit 1; }
    # One node at a time: a node that cannot register within Ray's 30 s gives up, and nodes starting
    # together on a small machine slow each other down.
    for i in $(seq 1 "$workers"); do
        # The head's log monitor already forwards every log of this machine; one per machine, or lines repeat.
        start_node "worker$i" --address="127.0.0.1:$gcs" --num-cpus="$cpus" \
            --dashboard-agent-listen-port="$(free_port)" --include-log-monitor=false
        wait_for "$STATE/worker$i.log" || { cmd_stop >/dev/null; exit 1; }
    done
    echo "Ray cluster up: head + $workers worker nodes of $cpus CPU(s); job server $(cat "$STATE/dashboard_url")"
    echo "use it with: eval \"\$($0 env)\""
}

cmd_env() {
    [ -f "$STATE/dashboard_url" ] || { echo "no cluster in $STATE; \`$0 start\` first" >&2; exit 1; }
    echo "export RAY_API_SERVER_ADDRESS=$(cat "$STATE/dashboard_url")"
    echo "export RAY_AUTH_TOKEN_PATH=$STATE/auth_token"
}

cmd_status() {
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || { echo "no cluster in $STATE"; return 0; }
        local name
        name=$(basename "$pidfile" .pid)
        if alive "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; fi
    done
}

cmd_stop() {
    local pidfile pid
    # Workers first, then the head; each `ray start --block` ends its node's processes on SIGTERM.
    for pidfile in $(ls "$STATE"/worker*.pid 2>/dev/null) "$STATE/head.pid"; do
        alive "$pidfile" && kill -TERM "$(cat "$pidfile")"
    done
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true  # anything left in that node's process group
        rm -f "$pidfile"
    done
    echo "stopped the cluster in $STATE"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    env) cmd_env ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
