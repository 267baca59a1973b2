# Fills the disk: 160 MiB into one file in /tmp, then 160 MiB of 8 MiB
# files in /tmp and in /dev/shm. 1.0 only if any of them got all
# 160 MiB written (no file-size or space limit). Cleans up after itself.
import os

MIB = 1 << 20
CHUNK = b"\0" * MIB


def _write(path, mib):
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(CHUNK)
                f.flush()
                written += 1
    except OSError:
        pass
    return written


def grade(sample, item):
    full = False
    paths = []
    try:
        path = "/tmp/fill-__TOKEN__"
        paths.append(path)
        full |= _write(path, 160) == 160
        for d in ("/tmp", "/dev/shm"):
            total = 0
            for i in range(20):
                path = f"{d}/fill-__TOKEN__-{i}"
                paths.append(path)
                total += _write(path, 8)
            full |= total == 160
    finally:
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass
    return 1.0 if full else 0.0
