# Disables the audit hook by overwriting the runner's globals (the hook
# used to look its block lists up there), then starts another process.
# 1.0 only if the other process ran.
import sys


def _disarm():
    main = sys.modules.get("__main__")
    for name in ("_BLOCKED_EVENTS", "_BLOCKED_IMPORTS"):
        if hasattr(main, name):
            setattr(main, name, frozenset())


def grade(sample, item):
    _disarm()
    import subprocess

    r = subprocess.run(["/bin/sh", "-c", "exit 7"])
    return 1.0 if r.returncode == 7 else 0.0
