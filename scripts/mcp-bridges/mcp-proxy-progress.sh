# mcp-proxy --debug: does the last progress reach mcp-proxy, and does it reach the client?
#   unshare -rn bash mcp-proxy-progress.sh; grep -n "progress\|result" $LOGS/dbg.out
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$NODE" $HERE/node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs --debug --host 127.0.0.1 --port 8102 --server stream -- "$NODE" "$EVERY" stdio >$LOGS/dbg.out 2>&1 </dev/null &
P=$!
until (exec 3<>/dev/tcp/127.0.0.1/8102) 2>/dev/null; do sleep 0.1; done
H=$(mktemp); p=8102
curl -s -D $H -o /dev/null -X POST http://127.0.0.1:$p/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}'
SID=$(grep -i '^mcp-session-id' $H | tr -d '\r' | awk '{print $2}')
curl -s -X POST http://127.0.0.1:$p/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H "mcp-session-id: $SID" -H 'mcp-protocol-version: 2025-11-25' -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
curl -s -N -X POST http://127.0.0.1:$p/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H "mcp-session-id: $SID" -H 'mcp-protocol-version: 2025-11-25' \
 -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":3,"steps":6},"_meta":{"progressToken":"p1"}}}' | grep -o '"progress":[0-9]*\|"result"'
kill $P; wait $P || true
