#!/bin/bash
# ssechan's bound on a cut stream, made small enough for 3000 progress events
# (~0.5 MB) to pass it: once with a small replay log, once with a small queue.
#   unshare -rn bash run-bound.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
D=$(cd "$(dirname "$0")" && pwd)
run() { # PORT FLAGS...
  local port=$1; shift
  "$SSECHAN" serve --mcp --listen 127.0.0.1:$port "$@" -- "$NODE" "$EVERY" stdio \
    >$LOGS/bound-$port.out 2>$LOGS/bound-$port.err </dev/null &
  local pid=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
  echo "== ssechan $*"
  PROBE_ONLY=overflow "$NODE" "$D/probe.mjs" "ssechan $*" "http://127.0.0.1:$port/mcp" "$pid"
  kill $pid; wait $pid || true
  echo "-- its log:"; grep -v 'Starting default\|listening on' $LOGS/bound-$port.err | cut -c1-300 | head -8
}
run 8105 --replay-bytes 64K
run 8106 --max-queue-bytes 64K
run 8107 --max-queue 500
