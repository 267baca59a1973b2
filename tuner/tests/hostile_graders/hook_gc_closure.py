# Finds the audit hook through the garbage collector and empties whatever
# it reads its block lists from (globals or closure cells), then starts
# another process. 1.0 only if the process ran.
import gc
import types


def _disarm():
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        cells = obj.__closure__ or ()
        for cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if isinstance(value, frozenset):
                cell.cell_contents = frozenset()
        g = obj.__globals__
        for name in ("_BLOCKED_EVENTS", "_BLOCKED_IMPORTS"):
            if isinstance(g.get(name), frozenset):
                g[name] = frozenset()


def grade(sample, item):
    _disarm()
    import subprocess

    r = subprocess.run(["/bin/sh", "-c", "exit 7"])
    return 1.0 if r.returncode == 7 else 0.0
