# Kills its own runner (the worker). That sample must be an error, and the
# grader must work again for the next sample (a fresh worker).
import os
import signal


def grade(sample, item):
    if sample["output_text"] == "kill":
        os.kill(os.getppid(), signal.SIGKILL)
    return 0.5
