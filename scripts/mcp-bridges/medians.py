"""Median calls/s per endpoint over the rounds of rtt-*.jsonl files given."""
import json, statistics, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
for n in ["ssechan", "mcp-proxy", "supergateway", "reference"]:
    r = [x for x in rows if x["name"] == n]
    print(f"{n:13} calls/s {[x['calls_per_s'] for x in r]} median {statistics.median(x['calls_per_s'] for x in r)}"
          f"  p50 ms {[x['p50_ms'] for x in r]} p99 ms {[x['p99_ms'] for x in r]}"
          f"  errors {sum(x['errors'] for x in r)} wrong {sum(x['wrong_answers'] for x in r)}"
          f"  load1m {[x['loadavg_1m_before'] for x in r]}")
