#!/bin/bash
# Rows (a)-(c): starts the four endpoints in a private network namespace and
# probes each.   unshare -rn bash run-probe.sh > probe.json
. "$(dirname "$0")/servers.sh"
D=$(dirname "$0")
for e in "ssechan 8101 $SSECHAN_PID" "mcp-proxy 8102 $MCPPROXY_PID" \
         "supergateway 8103 $SUPERGW_PID" "reference 8104 $REF_PID"; do
  set -- $e
  "$NODE" "$D/probe.mjs" "$1" "http://127.0.0.1:$2/mcp" "$3"
done
