#!/usr/bin/env python3
"""handler.py — the torture's exec handler (sink=exec, exec.mode=stream).

    handler.py OUT [RETRY_RATE] [FAIL_MATCH]

Reads one event per line on stdin and answers one line per event, as
docs/handlers.md says: appends the event to OUT (one write, O_APPEND, so
the workers' lines never interleave) and answers `ok`; answers `retry`
instead, without writing, for a RETRY_RATE share of the events (0 to 1);
answers `fail` for events holding the text FAIL_MATCH (they go to the
dead-letter file).  It ends at the end of its stdin (crwatch gone).
"""
import os
import random
import sys


def main():
    out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    fail = sys.argv[3].encode() if len(sys.argv) > 3 and sys.argv[3] else None
    rnd = random.Random()
    reply = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.endswith(b"\n"):
            line += b"\n"
        if fail and fail in line:
            answer = b"fail torture: refused on purpose\n"
        elif rate and rnd.random() < rate:
            answer = b"retry torture: a transient failure on purpose\n"
        else:
            os.write(out, line)
            answer = b"ok\n"
        try:
            reply.write(answer)
            reply.flush()
        except BrokenPipeError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
