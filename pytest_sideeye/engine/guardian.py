"""The resume guardian: a tiny process, started once per collector in its own session, that
guarantees a paused target is resumed even when the collector dies mid-snapshot (SIGKILL
included), and that no pause outlives a hard deadline.

Run as a script (not `-m`, so that it imports nothing of the package). Protocol on stdin,
one line per event: "S <pid>" before the collector stops <pid>, "C <pid>" after it
resumed it. On EOF (the collector exited, however) every pid still marked stopped gets
SIGCONT. Kept free of imports beyond the standard library: it must start fast and never
fail.
"""
import os
import select
import signal
import sys
import time

# The hard deadline: argv[1], from settings.max_pause_s() (SIDEEYE_MAX_PAUSE_S).
MAX_PAUSE_S = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0


def resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C to the test run is not for us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only EOF ends the guardian
    stopped: dict[int, float] = {}
    # Tell the collector we are up: it stops nothing before, so that our own start-up
    # never competes for CPU with a target that is being stopped.
    os.write(sys.stdout.fileno(), b"ready\n")
    buf = b""
    fd = sys.stdin.fileno()
    while True:
        timeout = None
        if stopped:
            timeout = max(0.0, min(stopped.values()) + MAX_PAUSE_S - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            now = time.monotonic()
            for pid, since in list(stopped.items()):
                if now - since >= MAX_PAUSE_S:
                    resume(pid)
                    del stopped[pid]
                    sys.stderr.write(f"sideeye guardian: resumed {pid} after {MAX_PAUSE_S}s\n")
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if parts[0] == b"S":
                stopped[pid] = time.monotonic()
            elif parts[0] == b"C":
                stopped.pop(pid, None)
    for pid in stopped:
        resume(pid)


if __name__ == "__main__":
    main()
