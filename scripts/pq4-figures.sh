#!/usr/bin/env bash
# Join round trip and idle CPU of a network, for one constella binary:
#   scripts/pq4-figures.sh BINARY [JOINS] [IDLE_SECS]
# Starts a seed on 127.0.0.1, times JOINS `constella join` commands (each a fresh node, which
# is then started), then measures the CPU time of every daemon over IDLE_SECS of idle running
# (/proc/PID/stat utime+stime), and, if the binary has `remove`, the time from the seed's rotation
# (`remove n1`) until the last remaining member adopted epoch 1, from the daemons' own log
# timestamps. Prints the figures; kills what it started.
set -euo pipefail
BIN=$1; JOINS=${2:-5}; IDLE=${3:-30}
ROOT=$(mktemp -d /tmp/pq4net-figures.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_socket() { for _ in $(seq 1 200); do [ -S "$1/control.sock" ] && return 0; sleep 0.05; done; echo "no socket in $1" >&2; exit 1; }
P=$(port)
"$BIN" --state-dir "$ROOT/seed" init --server-name seed --public-addr 127.0.0.1:"$P" --listen 127.0.0.1:"$P" --owner @bench >/dev/null
RUST_LOG=info "$BIN" --state-dir "$ROOT/seed" run >"$ROOT/seed.log" 2>&1 & PIDS+=($!)
wait_socket "$ROOT/seed"
TIMES=()
for i in $(seq 1 "$JOINS"); do
  LINK=$("$BIN" --state-dir "$ROOT/seed" invite --ttl 5m 2>/dev/null | grep -o "join://[^ ']*" | head -1)
  JP=$(port)
  START=$(date +%s%N)
  "$BIN" --state-dir "$ROOT/n$i" join --join "$LINK" --server-name "n$i" --public-addr 127.0.0.1:"$JP" --listen 127.0.0.1:"$JP" >/dev/null
  END=$(date +%s%N)
  TIMES+=($(( (END - START) / 1000000 )))
  RUST_LOG=info "$BIN" --state-dir "$ROOT/n$i" run >"$ROOT/n$i.log" 2>&1 & PIDS+=($!)
  wait_socket "$ROOT/n$i"
done
echo "join wall times (ms, whole CLI command incl. process start and state writes): ${TIMES[*]}"
printf '%s\n' "${TIMES[@]}" | sort -n | awk '{a[NR]=$1} END {print "join median ms:", a[int((NR+1)/2)]}'
sleep 5   # let the network settle before measuring idle
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A T0
for p in "${PIDS[@]}"; do T0[$p]=$(ticks "$p"); done
sleep "$IDLE"
HZ=$(getconf CLK_TCK); TOTAL=0
for p in "${PIDS[@]}"; do TOTAL=$(( TOTAL + $(ticks "$p") - ${T0[$p]} )); done
awk -v t="$TOTAL" -v hz="$HZ" -v n="${#PIDS[@]}" -v s="$IDLE" 'BEGIN { printf "idle CPU per node: %.2f %% (%d nodes, %d s)\n", 100*t/hz/s/n, n, s }'

if "$BIN" remove --help >/dev/null 2>&1 && [ "$JOINS" -ge 2 ]; then
  kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true   # n1 is removed: stop it first
  "$BIN" --state-dir "$ROOT/seed" remove n1 --yes >/dev/null
  LOGS=("$ROOT/seed.log"); for i in $(seq 2 "$JOINS"); do LOGS+=("$ROOT/n$i.log"); done
  # From the seed's "rotated the network secret" to the last member's "adopted a rotated network
  # secret" (each daemon's own log timestamp; one clock, one machine).
  for _ in $(seq 1 600); do
    ADOPTED=$( (grep -lE "adopted a rotated network secret|rotated the network secret" "${LOGS[@]:1}" 2>/dev/null || true) | wc -l)
    [ "$ADOPTED" -ge $(( ${#LOGS[@]} - 1 )) ] && break
    sleep 0.1
  done
  python3 - "${LOGS[@]}" <<'PY'
import re, sys, datetime
def ts(line):
    m = re.search(r'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z', line)
    return datetime.datetime.fromisoformat(m.group(1)) if m else None
def first(path, text):
    for line in open(path, errors="replace"):
        if text in line:
            return ts(line)
    return None
start = first(sys.argv[1], "rotated the network secret")
# A member uses the new epoch once it adopted it (or made a rival that won: then it logs
# "rotated" and never "adopted").
def used(path):
    times = [t for t in (first(path, "adopted a rotated network secret"),
                         first(path, "rotated the network secret")) if t]
    return min(times) if times else None
ends = [used(p) for p in sys.argv[2:]]
if start is None or None in ends:
    print("rotation: not every member adopted epoch 1 (%d of %d)" % (sum(e is not None for e in ends), len(ends)))
else:
    ms = [(e - start).total_seconds() * 1000 for e in ends]
    print("rotation: remove n1 -> all %d remaining members on epoch 1 in %.0f ms (median member %.0f ms)"
          % (len(ends) + 1, max(ms), sorted(ms)[len(ms) // 2]))
PY
fi
