#!/usr/bin/env bash
# Start N Constella nodes on 127.0.0.1 in temporary state directories, show the peers table,
# demonstrate a failover (kill -9 the leader, watch the others elect the next, bring it back),
# and keep the network running until Ctrl-C.
#
#   scripts/local-cluster.sh [N] [--no-failover] [--exit]
#
# N defaults to 3 (2..20). --exit stops the nodes after the demo instead of waiting for Ctrl-C.
# Uses target/debug/constella (built if missing) or the binary in $CONSTELLA_BIN.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

count=3
failover=1
wait_for_ctrl_c=1
for arg in "$@"; do
    case "$arg" in
        --no-failover) failover=0 ;;
        --exit) wait_for_ctrl_c=0 ;;
        -h|--help) usage; exit 0 ;;
        ''|*[!0-9]*) echo "error: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
        *) count=$arg ;;
    esac
done
if (( count < 2 || count > 20 )); then
    echo "error: N must be between 2 and 20, got $count" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CONSTELLA_BIN:-$repo/target/debug/constella}
if [[ ! -x $bin ]]; then
    echo "Building constella (cargo build)…"
    (cd "$repo" && cargo build --quiet)
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/constella-local.XXXXXX")
declare -a pids
cleanup() {
    for pid in "${pids[@]:-}"; do
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cli() { local i=$1; shift; "$bin" --state-dir "$root/node-$i" "$@"; }

# A free-looking port range: the base is random so two playgrounds rarely collide.
base=$(( 20000 + RANDOM % 20000 ))

start_node() {
    local i=$1
    RUST_LOG=info "$bin" --state-dir "$root/node-$i" run >>"$root/node-$i.log" 2>&1 &
    pids[i]=$!
    for _ in $(seq 100); do
        cli "$i" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: node-$i did not start; its log:" >&2
    cat "$root/node-$i.log" >&2
    exit 1
}

# Waits until node $1 sees $2 nodes alive.
wait_alive() {
    local i=$1 want=$2 _
    for _ in $(seq 200); do
        if [[ $(cli "$i" peers --json 2>/dev/null | grep -c '"status": "alive"') == "$want" ]]; then
            return 0
        fi
        sleep 0.05
    done
    echo "error: node-$i does not see $want nodes alive" >&2
    exit 1
}

leader_name() { cli "$1" peers | grep 'Хост' | awk '{print $2}'; }

echo "Starting $count nodes in $root"
for i in $(seq 1 "$count"); do
    port=$(( base + i ))
    if (( i == 1 )); then
        cli 1 init --server-name node-1 --public-addr "127.0.0.1:$port" --listen "127.0.0.1:$port" \
            --owner @local_owner >/dev/null
    else
        link=$(cli 1 invite --ttl 5m 2>/dev/null)
        cli "$i" join --server-name "node-$i" --join "$link" --public-addr "127.0.0.1:$port" \
            --listen "127.0.0.1:$port" >/dev/null
    fi
    start_node "$i"
done
for i in $(seq 1 "$count"); do wait_alive "$i" "$count"; done
echo
echo "All $count nodes alive. The network as node-$count sees it:"
cli "$count" peers

if (( failover )); then
    leader=$(leader_name 1)
    leader_index=${leader#node-}
    watcher=1
    (( leader_index == 1 )) && watcher=2
    echo
    echo "Killing the leader $leader with SIGKILL…"
    started=$(date +%s%N)
    kill -9 "${pids[leader_index]}"
    wait "${pids[leader_index]}" 2>/dev/null || true
    pids[leader_index]=
    for i in $(seq 1 "$count"); do
        (( i == leader_index )) || wait_alive "$i" $(( count - 1 ))
    done
    elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
    echo "Every survivor sees the new leader after ${elapsed_ms} ms (measured through the CLI):"
    cli "$watcher" peers
    echo
    echo "Restarting $leader from its state file…"
    start_node "$leader_index"
    for i in $(seq 1 "$count"); do wait_alive "$i" "$count"; done
    cli "$watcher" peers
fi

echo
echo "Try: $bin --state-dir $root/node-1 status"
echo "Logs: $root/node-*.log"
if (( wait_for_ctrl_c )); then
    echo "Press Ctrl-C to stop the nodes and remove $root."
    while true; do sleep 3600; done
fi
