#!/bin/bash
# Round trips per second through each endpoint, interleaved, ROUNDS rounds (the
# order rotates each round).   unshare -rn bash run-rtt.sh [ROUNDS=3] [SECONDS=10] > rtt.jsonl
. "$(dirname "$0")/servers.sh"
D=$(dirname "$0")
ROUNDS=${1:-3}; SECS=${2:-10}
E=("ssechan 8101" "mcp-proxy 8102" "supergateway 8103" "reference 8104")
for r in $(seq 0 $((ROUNDS-1))); do
  for k in 0 1 2 3; do
    set -- ${E[$(( (k + r) % 4 ))]}
    echo "round $((r+1)) $1 $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    "$NODE" "$D/rtt.mjs" "$1" "http://127.0.0.1:$2/mcp" 10 "$SECS" 2 | sed "s/^{/{\"round\":$((r+1)),/"
  done
done
