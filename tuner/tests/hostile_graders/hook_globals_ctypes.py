# Disables the audit hook through the runner's globals, then calls libc
# directly with ctypes. 1.0 only if a foreign call went through.
import sys


def grade(sample, item):
    main = sys.modules.get("__main__")
    for name in ("_BLOCKED_EVENTS", "_BLOCKED_IMPORTS"):
        if hasattr(main, name):
            setattr(main, name, frozenset())
    import ctypes

    return 1.0 if ctypes.CDLL(None).getpid() > 0 else 0.0
