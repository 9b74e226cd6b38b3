#!/bin/bash
# A cut stream's resume after 520 other calls in the same session (each call's
# stream has events too): is the cut stream's replay still there?
#   unshare -rn bash run-busy.sh
. "$(dirname "$0")/servers.sh"
D=$(dirname "$0")
for e in "ssechan 8101 $SSECHAN_PID" "mcp-proxy 8102 $MCPPROXY_PID" "reference 8104 $REF_PID"; do
  set -- $e
  PROBE_ONLY=busy "$NODE" "$D/probe.mjs" "$1" "http://127.0.0.1:$2/mcp" "$3"
done
