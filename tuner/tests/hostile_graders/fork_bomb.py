# A bounded fork bomb: up to 200 processes, each closing its descriptors
# (so the sample's result pipe is not held open) and sleeping 5 s. 1.0 only
# if more than 100 could be started within 1.5 s (far more than any sane
# process limit). Bounded so that a run against an unsandboxed runner
# cannot take the machine down.
import os
import time


def grade(sample, item):
    started = 0
    end = time.monotonic() + 1.5
    try:
        while started < 200 and time.monotonic() < end:
            if os.fork() == 0:
                os.closerange(3, 4096)
                time.sleep(5)
                os._exit(0)
            started += 1
    except OSError:
        pass
    return 1.0 if started > 100 else 0.0
