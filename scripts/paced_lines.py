#!/usr/bin/env python3
"""Writes 40-byte fan-out lines to stdout at RATE lines/s for SECS seconds
(scripts/perf.sh fanout, scripts/perf.sh compare fanmem). Ends quietly when
the reader goes."""
import sys
import time

rate, secs = int(sys.argv[1]), float(sys.argv[2])
t0, n = time.time(), 0
try:
    while time.time() - t0 < secs:
        due = int((time.time() - t0) * rate)
        if due > n:
            sys.stdout.write("".join("fan-out message %08d ....................\n" % i
                                     for i in range(n, due)))
            sys.stdout.flush()
            n = due
        time.sleep(0.005)
except BrokenPipeError:
    pass
