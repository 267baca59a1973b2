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
# Each sample is graded in a forked child (so samples can't leak state into
# each other) with RLIMIT_CPU set and a wall-clock deadline enforced here
# with SIGKILL. RLIMIT_AS (hard and soft) and the audit hook are installed
# before the user's source is compiled. The network namespace, where the
# kernel allows one, is created by the tuner before this script starts.
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


_BLOCKED_EVENTS = frozenset({
    # Network.
    "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
    "socket.sendmsg", "socket.gethostbyname", "socket.gethostbyaddr",
    "socket.getnameinfo",
    # Other processes (which would not be under this hook) ...
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    # ... and foreign calls (libc's connect() directly).
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
})
_BLOCKED_IMPORTS = frozenset({"_posixsubprocess", "_ctypes"})


def _audit(event, args):
    if event in _BLOCKED_EVENTS:
        raise PermissionError(f"{event} is not allowed in a grader (network and process creation are disabled)")
    if event == "import" and args and args[0] in _BLOCKED_IMPORTS:
        raise PermissionError(f"importing {args[0]} is not allowed in a grader")


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


def _grade_one(grade, req, timeout):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(grade, req, timeout, w)
        finally:
            os._exit(1)
    os.close(w)
    deadline = time.monotonic() + timeout
    chunks = []
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
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
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.addaudithook(_audit)
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        code = compile(setup["source"], "<grader source>", "exec")
        exec(code, namespace)
    except BaseException as e:
        _send({"error": _describe(e)})
        return
    grade = namespace.get("grade")
    if not callable(grade):
        _send({"error": "the source must define a function `grade(sample, item)`"})
        return
    _send({"ready": True})
    while True:
        req = _recv()
        if req is None:
            return
        _send(_grade_one(grade, req, timeout))


main()
