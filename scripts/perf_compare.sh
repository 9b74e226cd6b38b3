#!/usr/bin/env bash
# scripts/perf.sh compare OLD_BIN NEW_BIN [ROW ...]: see scripts/perf.sh and
# docs/performance.md. Each round runs every row for the ceiling (if the
# row has one), OLD, then NEW; the table shows medians over the rounds and
# the median of the per-round ratios (a ratio is taken within one round, so
# load from other work on the machine moves both sides together).
#
# Rows (the issue's table):
#   post     wrk -t1 -c50 -d${POST_SECS}s scripts/post_ingest.lua against
#            `serve --echo` with its client's stream read by the counter;
#            ceiling: `ceiling post` (bare hyper answering 200)
#   fanout   `yes LINE | serve` (50-byte lines as fast as the pipe takes
#            them), 1,000 streams read by `ceiling count` for ${FAN_SECS}s;
#            ceiling: `ceiling fanout` (bare hyper writing the events)
#   idle     resident memory per idle stream, 10,000 plain streams
#   tls      the same over HTTPS/1.1, 1,000 streams (NEW only: OLD has no TLS)
#   fanmem   resident memory after 20 s of 1,000 listeners at 2,000 lines/s
#   latency  p99 of `bench --clients 100 --rate 5000 --duration ${LAT_SECS}s`;
#            ceiling: `ceiling echo` (bare hyper writing each POST's body
#            to its client's stream), so p99 - ceiling's p99 is the
#            server's share of the tail
#   echo     `bench --clients 100 --duration ${ECHO_SECS}s`, closed loop;
#            ceiling: `ceiling echo`
#   redis    CPU per verified round trip of `serve --echo --redis` (serve +
#            redis-server, started fresh on free ports in a temp dir) over
#            that of `serve --echo` alone (its own run just before), both
#            `bench --clients 50 --duration ${REDIS_SECS}s`; also Redis
#            commands (INFO commandstats) and syscalls (perf stat
#            raw_syscalls:sys_enter) per round trip. For OLD only if it has
#            --redis.
set -euo pipefail
cd "$(dirname "$0")/.."
# table RESULTS ROUNDS: the medians and ratios of a results file.
table() {
  python3 - "$1" "$2" <<'PY'
import statistics, sys
from collections import defaultdict
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
rounds = int(sys.argv[2])
vals = defaultdict(list)     # (row, side) -> values in round order
extra = defaultdict(list)
for l in lines:
    vals[(l[0], l[1])].append(float(l[2]))
    extra[(l[0], l[1])].append(" ".join(l[3:]))
med = lambda xs: statistics.median(xs) if xs else None
def ratios(row, a, b):
    xs, ys = vals.get((row, a), []), vals.get((row, b), [])
    return [x / y for x, y in zip(xs, ys) if y]
fmt = {
    "post": lambda v: f"{v:,.0f} req/s", "fanout": lambda v: f"{v / 1e6:.2f} M events/s",
    "idle": lambda v: f"{v:,.0f} B", "tls": lambda v: f"{v:,.0f} B",
    "fanmem": lambda v: f"{v / 1e6:.0f} MB", "latency": lambda v: f"{v:.3f} ms",
    "echo": lambda v: f"{v:,.0f}/s", "redis": lambda v: f"{v:.2f}×",
}
goal = {
    "post": "≥ 0.85 of ceiling, all 2xx", "fanout": "≥ 0.85 of ceiling and ≥ old",
    "idle": "≤ 4,096 B", "tls": "≤ 12,288 B", "fanmem": "≤ 100 MB",
    "latency": "≤ 1.0 ms", "echo": "≥ old", "redis": "≤ 2.5× one instance",
}
print(f"\n{rounds} rounds; medians, and in brackets every round\n")
print("| row | ceiling | old | new | new/ceiling | new/old | goal | met |")
print("|---|---|---|---|---|---|---|---|")
for row in ["post", "fanout", "idle", "tls", "fanmem", "latency", "echo", "redis"]:
    if not any(k[0] == row for k in vals):
        continue
    f = fmt[row]
    cell = lambda side: (f"{f(med(vals[(row, side)]))} [{', '.join(f(v) for v in vals[(row, side)])}]"
                         if vals.get((row, side)) else "-")
    rc, ro = ratios(row, "new", "ceil"), ratios(row, "new", "old")
    rc_s = f"{med(rc):.2f} [{', '.join(f'{r:.2f}' for r in rc)}]" if rc else "-"
    ro_s = f"{med(ro):.2f} [{', '.join(f'{r:.2f}' for r in ro)}]" if ro else "-"
    new = med(vals.get((row, "new"), []))
    met = {
        "post": rc and med(rc) >= 0.85 and all(e.endswith("=0") for e in extra[(row, "new")]),
        "fanout": rc and ro and med(rc) >= 0.85 and med(ro) >= 1.0,
        "idle": new is not None and new <= 4096, "tls": new is not None and new <= 12288,
        "fanmem": new is not None and new <= 100e6, "latency": new is not None and new <= 1.0,
        "echo": ro and med(ro) >= 1.0, "redis": new is not None and new <= 2.5,
    }[row]
    print(f"| {row} | {cell('ceil')} | {cell('old')} | {cell('new')} | {rc_s} | {ro_s} | {goal[row]} | {'yes' if met else 'NO'} |")
# The redis row's parts: medians of each figure over the rounds.
for side in ["old", "new"]:
    runs = [dict(kv.split("=", 1) for kv in e.split()) for e in extra.get(("redis", side), [])]
    if not runs:
        continue
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    parts = ", ".join(f"{k} {med([float(r[k]) for r in runs]):g}" for k in keys)
    print(f"\nredis, {side} (medians; µs and counts per verified round trip): {parts}")
PY
}
# scripts/perf.sh compare --table RESULTS ROUNDS: the table of a former
# run's raw results (/tmp/ssechan-compare.txt).
if [ "${1:-}" = --table ]; then
  table "$2" "$3"
  exit
fi
[ $# -ge 2 ] || { echo "usage: scripts/perf.sh compare OLD_BIN NEW_BIN [ROW ...]" >&2; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
shift 2
ROWS="${*:-post fanout idle tls fanmem latency echo redis}"
ROUNDS=${ROUNDS:-3}
POST_SECS=${POST_SECS:-5}
FAN_SECS=${FAN_SECS:-5}
LAT_SECS=${LAT_SECS:-10}
ECHO_SECS=${ECHO_SECS:-10}
REDIS_SECS=${REDIS_SECS:-10}
BENCH=${SSECHAN_BENCH:-$NEW}
CEIL=target/release/examples/ceiling
cargo build --release --quiet --example ceiling
LINE="fan-out message ................................."
out=$(mktemp -d)
results=$out/results
port=$((19000 + RANDOM % 2000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT

# wait_port PORT: until something listens there.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# server SIDE ARGS...: starts SIDE's server on the next port (ceil: the
# ceiling example with ARGS; old/new: `serve` with ARGS); sets PID and URL.
server() {
  local side=$1
  shift
  port=$((port + 1))
  case $side in
    ceil) "$CEIL" "$1" "127.0.0.1:$port" "${@:2}" 2>/dev/null & ;;
    old) "$OLD" serve --listen "127.0.0.1:$port" -q "$@" 2>/dev/null & ;;
    new) "$NEW" serve --listen "127.0.0.1:$port" -q "$@" 2>/dev/null & ;;
  esac
  PID=$!
  pids+=("$PID")
  URL="http://127.0.0.1:$port/sse"
  wait_port "$port"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
record() { echo "$*" >>"$results"; echo "   $*"; }
bin_of() { case $1 in old) echo "$OLD" ;; new) echo "$NEW" ;; esac; }

row_post() {
  local side=$1
  # --reorder-window: at 60k POSTs/s the default 4,096 ids are 70 ms, and on
  # a shared machine the OS can deschedule a worker thread holding one
  # connection's request that long: its id comes more than 4,096 late, the
  # POSTs past the window get 429 and wrk, which never sends an id again,
  # leaves the channel waiting for them for the rest of the run (both builds).
  if [ "$side" = ceil ]; then server ceil post; else server "$side" --echo --keep-alive 30s --reorder-window 65536; fi
  local reader=""
  if [ "$side" != ceil ]; then
    # The client's stream first: a POST for an unknown client is refused.
    "$CEIL" count "$URL" 1 3600 >/dev/null 2>"$out/reader" &
    reader=$!
    for _ in $(seq 300); do grep -q '^open 1' "$out/reader" && break; sleep 0.1; done
  fi
  wrk -t1 -c50 -d"${POST_SECS}s" -s scripts/post_ingest.lua "$URL" -- f0 >"$out/wrk" 2>&1 || true
  [ -n "$reader" ] && stop "$reader"
  stop "$PID"
  local rps bad statuses
  rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk")
  bad=$(awk '$1 == "posts" && $2 ~ /^[0-9]+$/ && $2 !~ /^2/ {n += $3} END {print n + 0}' "$out/wrk")
  statuses=$(awk '$1 == "posts" && $2 ~ /^[0-9]+$/ {printf "%s%s:%s", sep, $2, $3; sep = ","}' "$out/wrk")
  record post "$side" "${rps:-0}" "statuses=$statuses" "non2xx=$bad"
}

row_fanout() {
  local side=$1
  if [ "$side" = ceil ]; then
    server ceil fanout 1000
  else
    port=$((port + 1))
    "$(bin_of "$side")" serve --listen "127.0.0.1:$port" -q < <(yes "$LINE") 2>/dev/null &
    PID=$!
    pids+=("$PID")
    URL="http://127.0.0.1:$port/sse"
    wait_port "$port"
  fi
  "$CEIL" count "$URL" 1000 "$FAN_SECS" >"$out/count" || true
  stop "$PID"
  local eps ended
  eps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_per_s"])' "$out/count" 2>/dev/null || echo 0)
  ended=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ended_early"])' "$out/count" 2>/dev/null || echo -)
  record fanout "$side" "$eps" "ended_early=$ended"
}

row_idle() {
  local side=$1 kind=$2 n=$3 name=$4
  python3 scripts/idle_memory.py "$(bin_of "$side")" "$n" --only "$kind" >"$out/idle" 2>&1 || true
  record "$name" "$side" "$(awk '/ B$/ {print $(NF-1)}' "$out/idle" | tail -1)"
}

row_fanmem() {
  local side=$1
  port=$((port + 1))
  "$(bin_of "$side")" serve --listen "127.0.0.1:$port" -q < <(python3 scripts/paced_lines.py 2000 120 2>/dev/null) 2>/dev/null &
  PID=$!
  pids+=("$PID")
  URL="http://127.0.0.1:$port/sse"
  wait_port "$port"
  "$CEIL" count "$URL" 1000 20 >"$out/count" || true
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  stop "$PID"
  record fanmem "$side" "$((rss * 1024))" "events_per_s=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_per_s"])' "$out/count" 2>/dev/null || echo 0)"
}

row_bench() {
  local side=$1 name=$2
  shift 2
  if [ "$side" = ceil ]; then server ceil echo; else server "$side" --echo --keep-alive 30s; fi
  "$BENCH" bench "$URL" "$@" --json "$out/bench.json" -q >/dev/null 2>&1 || true
  stop "$PID"
  python3 - "$out/bench.json" "$name" "$side" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, side = sys.argv[2], sys.argv[3]
value = r["latency_ms"]["p99"] if name == "latency" else r["throughput_msgs_per_s"]
print(f"{name} {side} {value} lost={r['lost']} errors={r['errors']} p50={r['latency_ms']['p50']}")
PY
  echo "   $(tail -1 "$results")"
}

# cpu_ticks PID: its user + system time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# syscalls_of PID FILE: counts PID's system calls into FILE until killed.
syscalls_of() {
  perf stat -e raw_syscalls:sys_enter -x, -p "$1" -o "$2" 2>/dev/null &
  pids+=("$!")
  SYSPID=$!
}
syscalls_in() { awk -F, '/raw_syscalls/ {print $1 + 0}' "$1" 2>/dev/null || echo 0; }

# bench_cpu PIDS...: runs the row's bench against $URL; sets RT (verified
# round trips), CPU (ticks of each PID over the run) and SYS (syscalls).
bench_cpu() {
  local p c0=() i=0 spids=()
  for p in "$@"; do
    c0+=("$(cpu_ticks "$p")")
    syscalls_of "$p" "$out/sys.$p"
    spids+=("$SYSPID")
  done
  "$BENCH" bench "$URL" --clients 50 --duration "${REDIS_SECS}s" --json "$out/bench.json" -q >/dev/null 2>&1 || true
  for p in "${spids[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  CPU=()
  SYS=()
  for p in "$@"; do
    CPU+=("$(($(cpu_ticks "$p") - c0[i]))")
    SYS+=("$(syscalls_in "$out/sys.$p")")
    i=$((i + 1))
  done
  RT=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["received"] if r["lost"] == 0 and r["errors"] == 0 else 0)' "$out/bench.json" 2>/dev/null || echo 0)
}

row_redis() {
  local side=$1 bin rport rdir rpid
  bin=$(bin_of "$side")
  "$bin" serve --help 2>/dev/null | grep -q -- --redis || return 0
  server "$side" --echo --keep-alive 30s
  bench_cpu "$PID"
  stop "$PID"
  local rt1=$RT cpu1=${CPU[0]} sys1=${SYS[0]}
  rdir=$(mktemp -d -p "$out")
  port=$((port + 1))
  rport=$port
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" \
    --daemonize no >/dev/null &
  rpid=$!
  pids+=("$rpid")
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  server "$side" --echo --keep-alive 30s --redis "redis://127.0.0.1:$rport/0"
  redis-cli -p "$rport" config resetstat >/dev/null
  bench_cpu "$PID" "$rpid"
  redis-cli -p "$rport" info commandstats >"$out/cmds"
  stop "$PID"
  stop "$rpid"
  python3 - "$side" "$(getconf CLK_TCK)" "$rt1" "$cpu1" "$sys1" "$RT" "${CPU[@]}" "${SYS[@]}" "$out/cmds" >>"$results" <<'PY'
import re, sys
side, hz, rt1, cpu1, sys1, rt2, cs, cr, ss, sr, cmds = sys.argv[1:]
hz, rt1, rt2 = int(hz), int(rt1) or 1, int(rt2) or 1
us = lambda ticks, n: int(ticks) / hz / n * 1e6
one, serve, rserver = us(cpu1, rt1), us(cs, rt2), us(cr, rt2)
calls = {m[1]: int(m[2]) for m in re.finditer(r"^cmdstat_([a-z|]+):calls=(\d+)", open(cmds).read(), re.M)}
calls.pop("config|resetstat", None)
top = " ".join(f"{k}={v / rt2:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v / rt2 >= 0.01)
print(f"redis {side} {(serve + rserver) / one:.3f} one={one:.1f} serve={serve:.1f} redis={rserver:.1f}"
      f" rt_one={rt1} rt_redis={rt2} sys_one={int(sys1) / rt1:.2f} sys_serve={int(ss) / rt2:.2f}"
      f" sys_redis={int(sr) / rt2:.2f} cmds={sum(calls.values()) / rt2:.2f} {top}")
PY
  echo "   $(tail -1 "$results")"
}

for round in $(seq "$ROUNDS"); do
  for row in $ROWS; do
    echo "== round $round: $row"
    case $row in
      post) row_post ceil; row_post old; row_post new ;;
      fanout) row_fanout ceil; row_fanout old; row_fanout new ;;
      idle) row_idle old plain 10000 idle; row_idle new plain 10000 idle ;;
      tls) row_idle new https 1000 tls ;;
      fanmem) row_fanmem old; row_fanmem new ;;
      latency)
        row_bench ceil latency --clients 100 --rate 5000 --duration "${LAT_SECS}s"
        row_bench old latency --clients 100 --rate 5000 --duration "${LAT_SECS}s"
        row_bench new latency --clients 100 --rate 5000 --duration "${LAT_SECS}s" ;;
      echo)
        row_bench ceil echo --clients 100 --duration "${ECHO_SECS}s"
        row_bench old echo --clients 100 --duration "${ECHO_SECS}s"
        row_bench new echo --clients 100 --duration "${ECHO_SECS}s" ;;
      redis) row_redis old; row_redis new ;;
      *) echo "unknown row $row" >&2; exit 2 ;;
    esac
  done
done

cp "$results" /tmp/ssechan-compare.txt
table "$results" "$ROUNDS"
echo "(raw results: /tmp/ssechan-compare.txt)"
