# Disables the audit hook through the runner's globals, then connects to
# a listener the test opened on the host's loopback. 1.0 only if the
# connection was made (the test also checks that nothing reached it).
import sys


def grade(sample, item):
    main = sys.modules.get("__main__")
    for name in ("_BLOCKED_EVENTS", "_BLOCKED_IMPORTS"):
        if hasattr(main, name):
            setattr(main, name, frozenset())
    import socket

    s = socket.create_connection(("127.0.0.1", __PORT__), timeout=1)
    s.sendall(b"escaped")
    s.close()
    return 1.0
