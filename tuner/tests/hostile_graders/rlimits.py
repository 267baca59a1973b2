# 1.0 if the grader runs without a sane limit on processes, file size or
# open files (the hard limits, which the code itself could raise the soft
# ones to).
import resource


def grade(sample, item):
    for limit, sane in (
        (resource.RLIMIT_NPROC, 4096),
        (resource.RLIMIT_FSIZE, 1 << 30),
        (resource.RLIMIT_NOFILE, 1 << 16),
    ):
        _, hard = resource.getrlimit(limit)
        if hard == resource.RLIM_INFINITY or hard > sane:
            return 1.0
    return 0.0
