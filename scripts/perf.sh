#!/usr/bin/env bash
# The figures of docs/performance.md: release builds, `ssechan serve` and
# `ssechan bench` in separate processes on loopback. Prints each bench
# report and the server's CPU time and resident memory beside it.
# Usage: scripts/perf.sh [throughput|latency|scale|chaos|fanout|tls|shards|cluster|post ...]
# (default: all). `post`: POST ingest with wrk and scripts/post_ingest.lua,
# 50 and 200 connections posting one client's messageIds 0, 1, 2, ...
# while curl reads its stream, twice each, on the memory store and with
# --redis: answers by status, the server's delivered count beside the
# 2xx answers, and the most bytes held for incoming messages (sampled). `cluster`: echo through haproxy to three `serve --redis`
# instances next to one instance without Redis, the issue's chaos run
# through them (200 clients, 2,000/s, a drop every 200 ms), memory per idle
# stream with Redis and Redis's own memory per channel (needs Debian's
# redis-server and haproxy). `shards`: 40,000 clients as 4 bench shards against 4
# serve processes (the open-file limit is 20,000 per process), merged.
# SSECHAN_SERVE / SSECHAN_BENCH run other binaries as the server or the
# load (a build from before a change, for figures side by side); without
# them the release build of this tree does both.
#
# scripts/perf.sh compare OLD_BIN NEW_BIN [ROW ...]: the issue's table side
# by side (docs/performance.md): every row for the bare-hyper ceiling where
# it has one (examples/ceiling.rs), OLD and NEW, interleaved, ROUNDS rounds
# (default 3), then a table of medians and ratios measured in the same
# round. Rows: post fanout idle tls fanmem latency echo redis (default: all).
# The load (bench, wrk, the counter) is the same for both; SSECHAN_BENCH
# names the bench binary (default NEW_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/ssechan
if [ "${1:-}" = compare ]; then
  exec bash scripts/perf_compare.sh "${@:2}"
fi
if [ -z "${SSECHAN_SERVE:-}${SSECHAN_BENCH:-}" ]; then cargo build --release --quiet; fi
SERVE=${SSECHAN_SERVE:-$B}
BENCH=${SSECHAN_BENCH:-$B}
port=18300

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# start_server ARGS...: starts serve on the next port; sets PID and URL.
start_server() {
  port=$((port + 1))
  "$SERVE" serve --listen "127.0.0.1:$port" -q "$@" 2>/dev/null &
  PID=$!
  URL="http://127.0.0.1:$port/sse"
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
}

# run_bench NAME MESSAGES ARGS...: bench against $URL, then server figures.
run_bench() {
  local name=$1 msgs=$2
  shift 2
  local t0 r0
  t0=$(cpu_ticks "$PID")
  r0=$(rss_kib "$PID")
  echo "== $name: ssechan bench $* (server: ${SERVER_ARGS})"
  "$BENCH" bench "$URL" "$@" --json "/tmp/ssechan-perf-$name.json" || true
  local t1 r1 hz
  t1=$(cpu_ticks "$PID")
  r1=$(rss_kib "$PID")
  hz=$(getconf CLK_TCK)
  python3 - "$name" "$t0" "$t1" "$hz" "$r0" "$r1" "$msgs" <<'PY'
import json, sys
name, t0, t1, hz, r0, r1, msgs = sys.argv[1:]
rep = json.load(open(f"/tmp/ssechan-perf-{name}.json"))
cpu = (int(t1) - int(t0)) / int(hz)
n = rep.get(msgs) or 1
print(f"   server cpu {cpu:.2f} s ({cpu / n * 1e6:.2f} µs per {msgs[:-1] if msgs.endswith('s') else msgs}), "
      f"bench cpu {rep['bench_cpu_s']:.2f} s ({rep['bench_cpu_s'] / n * 1e6:.2f} µs)")
print(f"   server rss {int(r0)} KiB before, {int(r1)} KiB after; clients {rep['clients']}")
PY
}

want() { [ $# -eq 0 ] || [[ " ${SELECTED} " == *" $1 "* ]]; }
SELECTED="${*:-throughput latency scale chaos fanout tls shards cluster post}"

if want throughput; then
  SERVER_ARGS="--echo --keep-alive 30s"; start_server --echo --keep-alive 30s
  run_bench throughput received --clients 100 --duration 30s
  kill "$PID"; wait "$PID" 2>/dev/null || true
fi
if want latency; then
  SERVER_ARGS="--echo --keep-alive 30s"; start_server --echo --keep-alive 30s
  run_bench latency received --clients 100 --rate 5000 --duration 30s
  kill "$PID"; wait "$PID" 2>/dev/null || true
fi
if want scale; then
  SERVER_ARGS="--echo --keep-alive 30s"; start_server --echo --keep-alive 30s
  idle=$(rss_kib "$PID")
  ( sleep 15; echo "   server rss with 10000 clients connected, 15 s in: $(rss_kib "$PID") KiB (idle: $idle KiB)" ) &
  probe=$!
  run_bench scale received --clients 10000 --rate 10000 --duration 30s
  wait "$probe"
  kill "$PID"; wait "$PID" 2>/dev/null || true
fi
if want chaos; then
  SERVER_ARGS="--echo --keep-alive 30s"; start_server --echo --keep-alive 30s
  run_bench chaos received --clients 100 --rate 2000 --drop-every 200ms --duration 60s
  kill "$PID"; wait "$PID" 2>/dev/null || true
fi
if want fanout; then
  # stdin fed at 2,000 lines/s: every line goes to each of 1,000 clients.
  SERVER_ARGS="(stdin at 2000 lines/s)"
  port=$((port + 1))
  python3 scripts/paced_lines.py 2000 60 | "$SERVE" serve --listen "127.0.0.1:$port" -q 2>/dev/null &
  sleep 0.5
  PID=$(pgrep -f "ssechan serve --listen 127.0.0.1:$port")
  URL="http://127.0.0.1:$port/sse"
  run_bench fanout events --mode listen --clients 1000 --duration 20s
  kill "$PID" 2>/dev/null || true
fi
if want tls; then
  # Memory per idle stream: plain HTTP (direct path) vs HTTPS (HTTP/1.1, h2).
  echo "== idle streams: scripts/idle_memory.py $B 1000"
  python3 scripts/idle_memory.py "$SERVE" 1000
fi
if want shards; then
  # 40,000 clients at SHARD_RATE msgs/s in total: 4 serve processes, 4
  # bench shards started together by --start-at, then one merged report.
  rate=${SHARD_RATE:-4000}
  pids=()
  for i in 1 2 3 4; do
    start_server --echo --keep-alive 30s
    pids+=("$PID")
    urls[$i]=$URL
  done
  for p in "${pids[@]}"; do idle[$p]=$(rss_kib "$p"); ticks[$p]=$(cpu_ticks "$p"); done
  echo "== shards: 4 x ssechan bench URL_i --clients 40000 --shard i/4 --rate $rate --duration 30s --start-at +40s"
  shard_pids=()
  for i in 1 2 3 4; do
    "$BENCH" bench "${urls[$i]}" --clients 40000 --shard "$i/4" --rate "$rate" --duration 30s \
      --start-at +40s --json "/tmp/ssechan-perf-shard$i.json" -q >/dev/null &
    shard_pids+=("$!")
  done
  ( sleep 55; for p in "${pids[@]}"; do echo "   server $p rss 15 s into the load: $(rss_kib "$p") KiB (idle ${idle[$p]} KiB)"; done ) &
  probe=$!
  for p in "${shard_pids[@]}"; do wait "$p" || true; done
  wait "$probe"
  hz=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do
    echo "   server $p cpu $(( ($(cpu_ticks "$p") - ticks[$p]) / hz )) s"
    kill "$p"; wait "$p" 2>/dev/null || true
  done
  "$BENCH" bench merge /tmp/ssechan-perf-shard{1,2,3,4}.json || true
fi
if want cluster; then
  tmp=$(mktemp -d)
  rport=$((port + 50)); hport=$((port + 51))
  # start_haproxy ADDR...: round-robin over ADDRs on $hport; sets HPID.
  start_haproxy() {
    hport=$((hport + 1))
    { printf 'global\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 5s\n'
      printf '  timeout client 60s\n  timeout server 60s\nfrontend channel\n  bind 127.0.0.1:%s\n' "$hport"
      printf '  default_backend instances\nbackend instances\n  balance roundrobin\n'
      for a in "$@"; do printf '  server %s %s\n' "s${a##*:}" "$a"; done; } >"$tmp/haproxy.cfg"
    haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 &
    HPID=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null && break; sleep 0.1; done
    URL="http://127.0.0.1:$hport/sse"
  }
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --daemonize no >/dev/null &
  rpid=$!
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  R="redis://127.0.0.1:$rport/0"
  SERVER_ARGS="--echo --keep-alive 30s (one instance, no Redis)"; start_server --echo --keep-alive 30s
  run_bench single received --clients 100 --duration 20s
  SERVER_ARGS="the same instance behind haproxy"; start_haproxy "127.0.0.1:$port"
  run_bench single-haproxy received --clients 100 --duration 20s
  kill "$HPID" "$PID"; wait "$HPID" "$PID" 2>/dev/null || true
  ipids=(); addrs=()
  for _ in 1 2 3; do
    start_server --echo --keep-alive 30s --redis "$R"
    ipids+=("$PID"); addrs+=("127.0.0.1:$port")
  done
  start_haproxy "${addrs[@]}"
  PID=${ipids[0]}
  SERVER_ARGS="3 x --echo --redis, haproxy round-robin; cpu and rss of the first instance"
  redis-cli -p "$rport" config resetstat >/dev/null
  declare -A c0
  for p in "$rpid" "$HPID" "${ipids[@]}"; do c0[$p]=$(cpu_ticks "$p"); done
  run_bench cluster received --clients 100 --duration 20s
  cpus=""
  for p in "$rpid" "$HPID" "${ipids[@]}"; do cpus+="$(cat "/proc/$p/comm")=$(( $(cpu_ticks "$p") - c0[$p] )) "; done
  calls=$(redis-cli -p "$rport" info commandstats | awk -F'[:=,]' '/^cmdstat_(fcall|xread|xrange):/ {n += $3} END {print n}')
  python3 - "$(getconf CLK_TCK)" "$calls" $cpus <<'PY'
import json, sys
hz, calls, cpus = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
r = {n: json.load(open(f"/tmp/ssechan-perf-{n}.json")) for n in ("single", "single-haproxy", "cluster")}
s, h, c = (r[n]["received"] / r[n]["duration_s"] for n in ("single", "single-haproxy", "cluster"))
n = r["cluster"]["received"] or 1
print(f"   one instance {s:,.0f} round trips/s; behind haproxy {h:,.0f}/s ({h / s:.0%}); "
      f"three with Redis through haproxy {c:,.0f}/s: {c / s:.0%}")
per = {}
for kv in cpus:
    name, ticks = kv.rsplit("=", 1)
    per[name] = per.get(name, 0) + int(ticks) / hz
per["ssechan bench"] = r["cluster"]["bench_cpu_s"]
print("   cpu per round trip: " + ", ".join(f"{k} {v / n * 1e6:.0f} µs" for k, v in per.items())
      + f"; calls to Redis per round trip {calls / n:.2f}")
PY
  run_bench cluster-chaos received --clients 200 --rate 2000 --duration 20s --drop-every 200ms
  kill "$HPID" "${ipids[@]}"; wait "$HPID" "${ipids[@]}" 2>/dev/null || true
  redis-cli -p "$rport" flushall >/dev/null
  echo "== idle streams with Redis: scripts/idle_memory.py $B 1000 --redis $R"
  python3 scripts/idle_memory.py "$SERVE" 1000 --redis "$R"
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  rm -rf "$tmp"
fi
if want post; then
  tmp=$(mktemp -d)
  rport=$((port + 60))
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --daemonize no >/dev/null &
  rpid=$!
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  metric() { curl -s "http://$MADDR/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
  for store in memory redis; do
    extra=()
    [ "$store" = redis ] && extra=(--redis "redis://127.0.0.1:$rport/0")
    for conns in 50 200; do
      for run in 1 2; do
        MADDR="127.0.0.1:$((port + 500))"
        SERVER_ARGS="--echo --keep-alive 30s ${extra[*]}"
        start_server --echo --keep-alive 30s --metrics "$MADDR" "${extra[@]}"
        curl -sN "$URL?sseClientId=c0" -o "$tmp/stream" &
        cpid=$!
        for _ in $(seq 50); do [ "$(metric ssechan_streams_open)" = 1 ] && break; sleep 0.1; done
        ( peak=0; while kill -0 "$PID" 2>/dev/null; do
            v=$(metric ssechan_incoming_bytes); [ "${v:-0}" -gt "$peak" ] && peak=$v && echo "$peak" >"$tmp/peak"
            sleep 0.1; done ) &
        sampler=$!
        echo "== post ($store, $conns connections, run $run): wrk -t1 -c$conns -d5s -s scripts/post_ingest.lua URL -- c0"
        wrk -t1 -c"$conns" -d5s -s scripts/post_ingest.lua "$URL" -- c0 >"$tmp/wrk" 2>&1 || true
        # In-flight POSTs finish after wrk stops: wait until the count settles.
        delivered=-1
        for _ in $(seq 50); do
          d=$(metric ssechan_messages_in_total); [ "$d" = "$delivered" ] && break; delivered=$d; sleep 0.2
        done
        kill "$sampler" "$cpid" 2>/dev/null; wait "$sampler" "$cpid" 2>/dev/null || true
        awk '/Requests\/sec/ {printf "   %s", $0} /^posts / {printf "; %s %s", $2, $3} END {print ""}' "$tmp/wrk"
        ok=$(awk '$1 == "posts" && $2 ~ /^2/ {n += $3} END {print n + 0}' "$tmp/wrk")
        echo "   2xx answers $ok, delivered to the application $delivered, echoes read $(grep -c '^data: ' "$tmp/stream"), peak incoming bytes $(cat "$tmp/peak" 2>/dev/null || echo 0)"
        kill "$PID"; wait "$PID" 2>/dev/null || true
        # Redis remembers c0's next messageId for the next run: forget it.
        redis-cli -p "$rport" flushall >/dev/null
        rm -f "$tmp/peak"
      done
    done
  done
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  rm -rf "$tmp"
fi
