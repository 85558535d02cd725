#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, for trying multi-node runs and `robolora submit` without
# cloud machines: a head node (job server on, no CPUs for work, as on a GPU cluster) and N worker
# nodes, each its own raylet as if on its own machine. Token authentication is on, as on a real
# cluster, and every node listens on 127.0.0.1 only. `start` reports the cluster up once its job
# server has run a no-op job to the end; otherwise it stops what it started and exits 1. Everything
# lives in one state directory, and `stop` ends only the processes started here (never `ray stop`,
# which would end every Ray cluster on the machine).
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
# lets running work finish, default 3), READY_S (seconds the no-op job may take, default 120).
set -euo pipefail

STATE=${ROBOLORA_LOCAL_CLUSTER:-/tmp/robolora-cluster}
RAY=${RAY:-ray}
PYTHON=$(dirname "$(command -v "$RAY")")/python
[ -x "$PYTHON" ] || PYTHON=python3
READY_JOB=local-cluster-ready  # the submission ID of the no-op job `start` waits for
# The caller's own Ray settings would point the nodes and the no-op job at another cluster or token.
unset RAY_ADDRESS RAY_API_SERVER_ADDRESS RAY_AUTH_TOKEN

# Ray turns a loopback --node-ip-address or --address into this machine's network address, and its
# processes then listen on every interface (ray-project/ray#59110). The head keeps 127.0.0.1 through
# Ray's switch for one-machine clusters, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which its job drivers
# inherit, so they reach it on 127.0.0.1 too. That switch also refuses to start worker nodes, so they
# start through this, which keeps the loopback addresses they are given.
LOOPBACK_RAY='import sys
from ray._private import services
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())'
# Every port Ray can choose, it chooses (0: the process binds a free one and reports it), so no port
# is probed here and handed over for another process to take in between. The one port Ray cannot
# choose, its client server's, is drawn below the kernel's range for ports bound as 0, and `start`
# begins again, up to 3 times, when a port was taken.
NODE_FLAGS=(--block --disable-usage-stats --log-color=false --node-ip-address=127.0.0.1
    --dashboard-agent-listen-port=0 --min-worker-port=0 --max-worker-port=0)
TRIES=3

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_node NAME COMMAND...: one `ray start --block` in its own session; its children stay in its
# process group, and SIGTERM to it shuts its node down cleanly.
start_node() {
    local name=$1
    shift
    # PATH: a job's `robolora ...` entrypoint runs with the node's PATH, so put this environment's scripts first.
    # A stopped node drains for at most DRAIN_S seconds (Ray's default, 30 s, waits on Ray Train's idle actors).
    PATH="$(dirname "$(command -v "$RAY")"):$PATH" RAY_TMPDIR="$STATE/tmp" RAY_AUTH_MODE=token \
        RAY_AUTH_TOKEN_PATH="$STATE/auth_token" RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${DRAIN_S:-3}" \
        setsid "$@" "${NODE_FLAGS[@]}" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

wait_for() {  # wait_for LOG: until the node reports it is up, or it or the head ends
    local log=$1 pidfile=${1%.log}.pid
    for _ in $(seq 1 180); do
        grep -q "block forever" "$log" 2>/dev/null && return 0
        alive "$pidfile" || { echo "node failed to start; see $log" >&2; tail -n 20 "$log" >&2; return 1; }
        alive "$STATE/head.pid" || { echo "the head node ended; see $STATE/head.log" >&2; return 1; }
        sleep 1
    done
    echo "node did not start within 180 s; see $log" >&2
    return 1
}

head_says() {  # head_says PATTERN: the first match of sed PATTERN's \1 in the head's log
    sed -n "s/$1/\1/p" "$STATE/head.log" | head -n 1
}

ready_check() {  # the job server accepts a no-op job and runs it to the end within READY_S seconds
    local url=$1 out=$STATE/ready_check.log
    if RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token" timeout "${READY_S:-120}" \
        "$RAY" job submit --address "$url" --submission-id "$READY_JOB" -- true >"$out" 2>&1 &&
        grep -q "Job '$READY_JOB' succeeded" "$out"; then
        return 0
    fi
    echo "the job server at $url did not run the no-op job $READY_JOB to the end within ${READY_S:-120} s;" \
        "see $out and $STATE/head.log" >&2
    tail -n 20 "$out" >&2
    return 1
}

start_cluster() {  # start_cluster WORKERS CPUS: one try; 0 once the cluster has run the no-op job
    local workers=$1 cpus=$2 gcs url
    rm -rf "$STATE"
    mkdir -p "$STATE/tmp"
    chmod 700 "$STATE"
    # The cluster's shared secret; every node and every client reads it from this file.
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/auth_token")
    start_node head env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "$RAY" start --head --port=0 \
        --num-cpus="${HEAD_CPUS:-0}" --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port=0 \
        --ray-client-server-port="$((20000 + RANDOM % 3000))"
    wait_for "$STATE/head.log" || return 1
    gcs=$(cat "$STATE/tmp/ray/ray_current_cluster" 2>/dev/null)  # the GCS address, as Ray records it
    url=$(head_says ".*RAY_API_SERVER_ADDRESS='\(http:\/\/127\.0\.0\.1:[0-9]*\)'.*")
    [ -n "$gcs" ] && [ -n "$url" ] || { echo "the head did not report its addresses; see $STATE/head.log" >&2; return 1; }
    echo "$gcs" >"$STATE/gcs_address"
    echo "$url" >"$STATE/dashboard_url"
    # One node at a time: a node that cannot register within Ray's 30 s gives up, and nodes starting
    # together on a small machine slow each other down.
    for i in $(seq 1 "$workers"); do
        # The head's log monitor already forwards every log of this machine; one per machine, or lines repeat.
        start_node "worker$i" "$PYTHON" -c "$LOOPBACK_RAY" start --address="$gcs" --num-cpus="$cpus" \
            --include-log-monitor=false
        wait_for "$STATE/worker$i.log" || return 1
    done
    ready_check "$url"
}

cmd_start() {
    local workers=${1:-2} cpus=${2:-1} try
    if alive "$STATE/head.pid"; then
        echo "already running (state in $STATE); \`$0 stop\` first" >&2
        exit 1
    fi
    # The nodes run in sessions of their own, out of reach of the terminal's Ctrl-C: stop them here.
    trap 'cmd_stop >/dev/null; echo "interrupted; the cluster is stopped" >&2; exit 130' INT TERM
    for try in $(seq 1 "$TRIES"); do
        if start_cluster "$workers" "$cpus"; then
            trap - INT TERM
            echo "Ray cluster up: head + $workers worker nodes of $cpus CPU(s), on 127.0.0.1;" \
                "job server $(cat "$STATE/dashboard_url") (ran the no-op job $READY_JOB)"
            echo "use it with: eval \"\$($0 env)\""
            return 0
        fi
        cmd_stop >/dev/null
        if [ "$try" -lt "$TRIES" ] && grep -qE "Failed to bind|Address already in use" "$STATE"/*.log 2>/dev/null; then
            echo "a port was taken while the cluster started; starting again ($((try + 1)) of $TRIES)" >&2
            continue
        fi
        echo "the cluster did not start; its processes are stopped and its logs are in $STATE" >&2
        exit 1
    done
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
    *) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; exit 2 ;;
esac
