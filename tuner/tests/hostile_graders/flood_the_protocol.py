# Module-level code runs in the worker itself, which still holds the
# descriptor the runner answers the tuner on: 256 MiB without a newline
# there, to grow the tuner's memory (a reply line it reads whole). The
# tuner must cut such a line short and fail the worker, not buffer it.
import sys

_fd = getattr(sys.modules["__main__"], "_proto_out", None)
if _fd is not None:
    import os

    chunk = b"x" * (8 << 20)
    for _ in range(32):
        os.write(_fd, chunk)


def grade(sample, item):
    return 0.5
