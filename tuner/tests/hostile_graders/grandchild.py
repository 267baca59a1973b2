# Leaves a grandchild behind: double fork + setsid (its own session and
# process group), marked with a token the test looks for in the host's
# /proc, heartbeating into /tmp. Samples:
# - "hang": leave one, then hang until the per-sample timeout;
# - "return": leave one, then return at once;
# - "check": 1.0 only if a heartbeat from an earlier sample still moves.
# A grandchild gives up by itself after 30 s, so that a run against an
# unsandboxed runner does not leak it forever.
import os
import time

HB = "/tmp/hb-__TOKEN__"


def _grandchild():
    # Marks itself for the test's scan of the host's /proc: a file held
    # open (its fd's link names the token) and, where allowed, its name.
    hold = open("/tmp/hold-__TOKEN__", "w")
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("__TOKEN__")
    except OSError:
        pass
    end = time.monotonic() + 30
    n = 0
    while time.monotonic() < end:
        n += 1
        try:
            with open(HB, "w") as f:
                f.write(str(n))
        except OSError:
            pass
        time.sleep(0.1)


def _leave_one():
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                _grandchild()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _beat():
    try:
        with open(HB) as f:
            return f.read()
    except OSError:
        return None


def grade(sample, item):
    what = sample["output_text"]
    if what == "hang":
        _leave_one()
        while True:
            time.sleep(1)
    if what == "return":
        _leave_one()
        return 0.0
    first = _beat()
    time.sleep(0.5)
    return 1.0 if first is not None and _beat() != first else 0.0
