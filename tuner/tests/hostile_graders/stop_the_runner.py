# Stops the runner (SIGSTOP to the parent) so that its per-sample deadline
# never fires, and leaves a setsid grandchild (marked with a token the
# test looks for in the host's /proc). The tuner must kill the whole
# worker, grandchild included.
import os
import signal
import time


def grade(sample, item):
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                # The mark the test looks for in the host's /proc: a file
                # held open, its fd's link naming the token.
                hold = open("/tmp/hold-__TOKEN__", "w")
                time.sleep(30)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.kill(os.getppid(), signal.SIGSTOP)
    return 1.0
