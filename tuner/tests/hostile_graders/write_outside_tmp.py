# Writes a file into a host directory the test made (outside the
# sandbox's private /tmp). 1.0 only if the write succeeded; the test also
# checks that the file does not exist on the host.
def grade(sample, item):
    with open("__DIR__/escaped", "w") as f:
        f.write("__TOKEN__")
    return 1.0
