# Sourced first by every script here, inside `unshare -rn`: loopback up,
# and where the binaries are (SSECHAN may name another build).
set -eu
ip link set lo up
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NODE=$ROOT/tests/mcp/node_modules/.bin/node
EVERY=$ROOT/tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js
SSECHAN=${SSECHAN:-$ROOT/target/release/ssechan}
LOGS=${LOGS:-/tmp/mcp-bridges-logs}
mkdir -p "$LOGS"
