"""Per-second intake series of one smtp-source run (issue 11's misbehaving-plugin check).

smtp-source -c prints a running count of completed DATA commands ("N\\r", flushed each time).
`SourceReader` reads that stream as it comes and timestamps every count, so the intake of each
second since the start of the run is known: the rate "within 5 s of the plugin starting to fail"
can be read off the series instead of being inferred from a whole-run average.
"""

import re
import threading
import time

_COUNT = re.compile(rb"(\d+)\s*$")


class SourceReader(threading.Thread):
    """Drains one pipe of smtp-source to EOF, keeping all its bytes, and (for stdout) the
    (seconds since t0, count) of every counter update."""

    def __init__(self, pipe, t0, counts=True):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.t0 = t0
        self.counts = counts
        self.data = bytearray()
        self.points = []  # (seconds since t0, completed DATA count)

    def run(self):
        pending = b""
        while True:
            chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
            if not chunk:
                break
            now = time.monotonic() - self.t0
            self.data += chunk
            if not self.counts:
                continue
            # Counts are separated by \r (and a final \n); keep an unfinished number for later.
            pending += chunk
            parts = re.split(rb"[\r\n]", pending)
            pending = parts.pop()
            for p in reversed(parts):
                m = _COUNT.search(p)
                if m:
                    self.points.append((now, int(m.group(1))))
                    break
        m = _COUNT.search(pending)
        if self.counts and m:
            self.points.append((time.monotonic() - self.t0, int(m.group(1))))


def per_second(points, duration):
    """Messages accepted in each whole second [k, k+1) of the run, from the counter points; the
    last, partial second is left out unless the run ended exactly on it."""
    seconds = int(duration)
    out = []
    last = 0
    i = 0
    for k in range(1, seconds + 1):
        count = last
        while i < len(points) and points[i][0] < k:
            count = points[i][1]
            i += 1
        out.append(count - last)
        last = count
    return out


def five_second_check(bad_series, chain_rate, target=0.80):
    """Issue 11: from 5 s after the bad plugin starts failing (the run's first message), every
    whole second's intake is at least `target` x the chain's whole-run intake rate. Returns
    (ok, worst ratio from second 5 on, seconds checked); ok is None if the run was too short."""
    tail = bad_series[5:]
    if not tail or not chain_rate:
        return None, None, 0
    worst = min(tail) / chain_rate
    return worst >= target, worst, len(tail)


def series_text(series):
    return " ".join(str(n) for n in series) if series else "(shorter than 1 s)"
