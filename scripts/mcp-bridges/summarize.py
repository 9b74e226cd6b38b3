"""Prints probe.json (several JSON objects, one per endpoint) compactly."""
import json, sys
txt = open(sys.argv[1] if len(sys.argv) > 1 else "probe.json").read()
dec = json.JSONDecoder(); i = 0
while True:
    while i < len(txt) and txt[i].isspace(): i += 1
    if i >= len(txt): break
    o, i = dec.raw_decode(txt, i)
    print("=====", o["name"])
    print("processes", json.dumps(o["processes"]))
    for k, v in o["origin_host"].items(): print(" ", k, json.dumps(v))
    print("uncut", [(u["progress"], u["result"]) for u in o["uncut"]])
    for c in o["cut"] + [o["cut_late"], o["cut_overflow"]]:
        c = dict(c); c.pop("last_event_id", None); print("cut", json.dumps(c))
