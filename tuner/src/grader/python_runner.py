# Flywheel's runner for `python` graders (embedded in the tuner with
# include_str!; stdlib only). It speaks JSON lines on its original
# stdin/stdout, which it moves to private descriptors first so that the
# user's code can neither read the requests nor corrupt the replies: the
# user's stdout goes to stderr and its stdin is /dev/null.
#
#   -> {"source": str, "timeout": float, "memory_bytes": int}
#   <- {"ready": true}  or  {"error": str}            (then it exits)
#   -> {"sample": {...}, "item": {...}}               (one per line)
#   <- {"score": float} or {"error": str}
#
#   "sandbox" in the setup is null (`--python-sandbox none`) or
#   {"uid": int|null, "nproc": int, "fsize": int, "nofile": int}: this
#   script then runs inside bubblewrap (its own pid namespace, where it is
#   pid 2 under bwrap's init), started by the tuner. With a uid (the tuner
#   runs as root, so the sandbox has no user namespace) it first drops to
#   that uid, which clears its capabilities; then it sets the rlimits.
#
# Each sample is graded in a forked child (so samples can't leak state into
# each other) with RLIMIT_CPU set and a wall-clock deadline enforced here
# with SIGKILL. RLIMIT_AS (hard and soft), the sandbox's rlimits and the
# audit hook are installed before the user's source is compiled. In the
# sandbox, every process but this one is killed after each sample (and
# after the source is loaded), so nothing a sample started outlives it,
# whatever session or process group it moved to.
import json
import math
import os
import resource
import select
import signal
import sys
import time
import traceback

_proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
_proto_out = os.dup(1)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.dup2(2, 1)
sys.stdin = open(os.devnull, "r")
sys.stdout = sys.stderr


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(_proto_out, data)
        data = data[n:]


_in_buf = b""


def _recv():
    global _in_buf
    while b"\n" not in _in_buf:
        chunk = _proto_in.read(65536)
        if not chunk:
            return None
        _in_buf += chunk
    line, _in_buf = _in_buf.split(b"\n", 1)
    return json.loads(line)


def _install_audit_hook():
    # Everything the hook uses is bound here, in its closure: it never
    # reads a global or a builtin at call time, so user code cannot disarm
    # it by overwriting this script's globals (`__main__`) or `builtins`;
    # and nothing outside keeps a reference to it. The routes to its
    # closure cells (the garbage collector, tracing and profiling hooks)
    # are blocked, and so is opening /proc files for writing (patching the
    # interpreter's memory through /proc/self/mem). This is defence in
    # depth only: the sandbox is the boundary.
    blocked = frozenset({
        # Network.
        "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
        "socket.sendmsg", "socket.gethostbyname", "socket.gethostbyaddr",
        "socket.getnameinfo",
        # Other processes (which would not be under this hook) ...
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        # ... and foreign calls (libc's connect() directly).
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
        # The ways to this hook's closure.
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys.settrace", "sys.setprofile", "sys._settraceallthreads",
        "sys._setprofileallthreads", "sys.monitoring.register_callback",
    })
    blocked_imports = frozenset({"_posixsubprocess", "_ctypes"})
    deny = PermissionError
    str_type, bytes_type, int_type, type_of, len_of = str, bytes, int, type, len
    as_str = str.__str__  # an exact str, even from a str subclass with its own __eq__
    decode = bytes.decode
    stat = os.stat
    writing = os.O_WRONLY | os.O_RDWR
    try:
        proc_dev = stat("/proc").st_dev
    except OSError:
        proc_dev = None

    def hook(event, args):
        if event in blocked:
            raise deny(f"{event} is not allowed in a grader (network and process creation are disabled)")
        if event == "import" and args:
            name = args[0]
            if type_of(name) is not str_type:
                name = as_str(name)
            if name in blocked_imports:
                raise deny(f"importing {name} is not allowed in a grader")
        elif event == "open" and len_of(args) >= 3:
            path, flags = args[0], args[2]
            if type_of(flags) is not int_type or not flags & writing:
                return
            if type_of(path) is bytes_type:
                path = decode(path, "utf-8", "surrogateescape")
            elif type_of(path) is not str_type:
                return
            on_proc = path.startswith("/proc") or "/proc/" in path
            if not on_proc and proc_dev is not None:
                try:
                    on_proc = stat(path).st_dev == proc_dev
                except OSError:
                    pass
            if on_proc:
                raise deny("writing to /proc is not allowed in a grader")

    sys.addaudithook(hook)


def _kill_strays(sandbox):
    # In the sandbox's pid namespace this script is the only process that
    # must live (bwrap's init, pid 1, is spared by kill(-1) and not ours to
    # signal anyway): kill(-1) reaches every process the user code started,
    # whichever session or process group it is in. Never outside the
    # sandbox, where kill(-1) would reach every process of the user.
    if sandbox is None or os.getpid() != 2:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # Reap the ones that were this script's own children (forked by
    # module-level code): zombies would count against RLIMIT_NPROC.
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break


def _enter_sandbox(sandbox):
    uid = sandbox.get("uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise RuntimeError("could not drop root in the sandbox")
    for limit, value in (
        (resource.RLIMIT_NPROC, sandbox["nproc"]),
        (resource.RLIMIT_FSIZE, sandbox["fsize"]),
        (resource.RLIMIT_NOFILE, sandbox["nofile"]),
    ):
        resource.setrlimit(limit, (value, value))


def _describe(exc):
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _check_result(r):
    if isinstance(r, bool) or not isinstance(r, (int, float)):
        return {"error": f"grade() must return a number, got {type(r).__name__}"}
    try:
        f = float(r)
    except OverflowError:
        return {"error": "grade() returned an int too large for a float"}
    if not math.isfinite(f):
        return {"error": f"grade() returned a non-finite number ({f})"}
    return {"score": f}


def _child(grade, req, timeout, w):
    os.close(_proto_out)
    _proto_in.close()
    cpu = int(math.ceil(timeout)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        out = _check_result(grade(req.get("sample"), req.get("item")))
    except BaseException as e:  # SystemExit and KeyboardInterrupt too
        out = {"error": _describe(e)}
    data = json.dumps(out).encode()
    while data:
        n = os.write(w, data)
        data = data[n:]
    os._exit(0)


def _grade_one(grade, req, timeout, sandbox):
    try:
        return _grade_in_child(grade, req, timeout)
    finally:
        _kill_strays(sandbox)


def _grade_in_child(grade, req, timeout):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(grade, req, timeout, w)
        finally:
            os._exit(1)
    os.close(w)
    # The child's exit, not only the pipe's EOF, ends the wait: a
    # grandchild holding the pipe open would otherwise turn a sample that
    # returned into a time-out.
    try:
        exited = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exited = None
    watch = [r] if exited is None else [r, exited]
    deadline = time.monotonic() + timeout
    chunks = []
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(watch, [], [], left)
        if not ready:
            continue
        if r in ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            continue
        # The child is gone: what it wrote is in the pipe already.
        os.set_blocking(r, False)
        try:
            while chunk := os.read(r, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        break
    os.close(r)
    if exited is not None:
        os.close(exited)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        return {"error": f"timed out after {timeout:g}s"}
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if data:
        try:
            return json.loads(data)
        except ValueError:
            pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = {signal.SIGXCPU: " (CPU time limit)", signal.SIGKILL: " (CPU time or memory limit)"}.get(sig, "")
        return {"error": f"grader process killed by {name}{hint}"}
    return {"error": f"grader process exited with status {os.waitstatus_to_exitcode(status)} without a result"}


def main():
    setup = _recv()
    if setup is None:
        return
    timeout = float(setup["timeout"])
    mem = int(setup["memory_bytes"])
    sandbox = setup.get("sandbox")
    if sandbox is not None:
        _enter_sandbox(sandbox)
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _install_audit_hook()
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        code = compile(setup["source"], "<grader source>", "exec")
        exec(code, namespace)
    except BaseException as e:
        _send({"error": _describe(e)})
        return
    finally:
        _kill_strays(sandbox)
    grade = namespace.get("grade")
    if not callable(grade):
        _send({"error": "the source must define a function `grade(sample, item)`"})
        return
    _send({"ready": True})
    while True:
        req = _recv()
        if req is None:
            return
        _send(_grade_one(grade, req, timeout, sandbox))


main()
