#!/usr/bin/env bash
# scripts/post_instructions.sh BIN|ceil [SECS]: user-space instructions per
# 2xx POST of the post row (docs/performance.md, "POST ingest"), counted by
# valgrind's callgrind, so that the figure does not move with the load of a
# shared machine as req/s and CPU time do. BIN runs `serve --echo` under
# callgrind (`ceil`: `ceiling post`, the bare hyper answer), the client's
# stream is read by `ceiling count`, the counters are zeroed, wrk -t1 -c50
# posts its messageIds for SECS (default 10) with scripts/post_ingest.lua,
# and the counters are dumped. Kernel time is not in it: the system calls
# per POST are counted by `perf stat` in the post row's profile instead.
# The callgrind file is kept (path printed) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
SECS=${2:-10}
CEIL=target/release/examples/ceiling
cargo build --release --quiet --example ceiling
out=$(mktemp -d)
port=$((21000 + RANDOM % 2000))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [ "$BIN" = ceil ]; then
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" "$CEIL" post "127.0.0.1:$port" 2>"$out/vg" &
else
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" "$BIN" serve --listen "127.0.0.1:$port" \
    -q --echo --keep-alive 30s --reorder-window 65536 2>"$out/vg" &
fi
PID=$!
pids+=("$PID")
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$port/sse"
if [ "$BIN" != ceil ]; then
  # The client's stream first: a POST for an unknown client is refused.
  "$CEIL" count "$URL" 1 3600 >/dev/null 2>"$out/reader" &
  pids+=("$!")
  for _ in $(seq 300); do grep -q '^open 1' "$out/reader" && break; sleep 0.1; done
fi
callgrind_control -z "$PID" >/dev/null 2>&1
wrk -t1 -c50 -d"${SECS}s" -s scripts/post_ingest.lua "$URL" -- f0 >"$out/wrk"
callgrind_control -d "$PID" >/dev/null 2>&1
kill "$PID"
wait "$PID" 2>/dev/null || true
ok=$(awk '$1 == "posts" && $2 ~ /^2/ {n += $3} END {print n + 0}' "$out/wrk")
bad=$(awk '$1 == "posts" && $2 ~ /^[0-9]+$/ && $2 !~ /^2/ {n += $3} END {print n + 0}' "$out/wrk")
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out"/cg.*.1)
echo "$ok 2xx ($bad other) in ${SECS}s, $((ir / (ok > 0 ? ok : 1))) instructions per 2xx POST (user space)"
echo "callgrind file: $(ls "$out"/cg.*.1)"
