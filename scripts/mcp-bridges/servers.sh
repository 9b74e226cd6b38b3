# Sourced by the run scripts, inside `unshare -rn` (a private network namespace
# with only loopback: supergateway and the reference cannot be told to bind
# loopback, they listen on every interface).
# Starts the four endpoints in front of server-everything, each on a fixed port:
#   8101 ssechan serve --mcp   8102 mcp-proxy   8103 supergateway --stateful
#   8104 server-everything's own streamableHttp (no bridge)
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
B=$HERE

"$SSECHAN" serve --mcp --listen 127.0.0.1:8101 -- "$NODE" "$EVERY" stdio \
  >"$LOGS/ssechan.out" 2>"$LOGS/ssechan.err" </dev/null &
SSECHAN_PID=$!
# --host defaults to "::" (every interface); loopback here like the others.
"$NODE" "$B/node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs" --host 127.0.0.1 --port 8102 \
  --server stream -- "$NODE" "$EVERY" stdio \
  >"$LOGS/mcp-proxy.out" 2>"$LOGS/mcp-proxy.err" </dev/null &
MCPPROXY_PID=$!
# supergateway stops when its stdin closes: </dev/null keeps it running.
"$NODE" "$B/node_modules/supergateway/dist/index.js" --stdio "$NODE $EVERY stdio" \
  --outputTransport streamableHttp --stateful --port 8103 --logLevel none \
  >"$LOGS/supergateway.out" 2>"$LOGS/supergateway.err" </dev/null &
SUPERGW_PID=$!
PORT=8104 "$NODE" "$EVERY" streamableHttp \
  >"$LOGS/reference.out" 2>"$LOGS/reference.err" </dev/null &
REF_PID=$!
export SSECHAN_PID MCPPROXY_PID SUPERGW_PID REF_PID NODE EVERY

stop_servers() {
  kill "$SSECHAN_PID" "$MCPPROXY_PID" "$SUPERGW_PID" "$REF_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_servers EXIT

# Wait until each port accepts a connection (bounded: 30 s).
for p in 8101 8102 8103 8104; do
  i=0
  until (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; do
    i=$((i+1)); [ $i -lt 300 ] || { echo "port $p never opened" >&2; exit 1; }
    sleep 0.1
  done
done
