# Reads the environment of the tuner (the worker's parent, its parent, or
# any process it can see) looking for the secret the test put there.
# 1.0 only if the secret was found.
import os

SECRET = b"FLYWHEEL_HOSTILE_SECRET=__TOKEN__"


def _pids():
    pids = {os.getppid(), __TUNER_PID__}
    try:
        with open(f"/proc/{os.getppid()}/stat", "rb") as f:
            pids.add(int(f.read().rsplit(b")", 1)[1].split()[1]))
    except (OSError, ValueError, IndexError):
        pass
    for name in os.listdir("/proc"):
        if name.isdigit():
            pids.add(int(name))
    return pids


def grade(sample, item):
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if SECRET in f.read():
                    return 1.0
        except OSError:
            pass
    return 0.0
