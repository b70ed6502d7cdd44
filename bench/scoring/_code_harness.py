"""Child side of the ``code`` scorer: run with ``python -s -S -B -c <this source> <payload.json>``.

Standalone (imports only the standard library). Order: die with the parent (PR_SET_PDEATHSIG); set
resource limits; read and delete the payload; point fds 0-2 at /dev/null, keeping a private duplicate of
stdout for results; disable the process-spawning and file-destroying functions of ``os`` and the creation
of sockets (a guard against accidents, as in HumanEval's ``reliability_guard``, not a security boundary:
the parent also runs this in an empty network namespace where the host allows it); run the answer as a
module, then each test in the same namespace. Every result is one line ``<nonce> <json>`` written (unbuffered) as soon as known, so
the parent keeps the results of the tests that finished before a timeout or a crash.
"""

import builtins
import json
import os
import resource
import sys

_SPAWN_AND_DESTROY = (
    "system", "popen", "fork", "forkpty", "vfork", "kill", "killpg", "execv", "execve", "execl", "execle",
    "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve",
    "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "putenv", "unsetenv", "remove", "unlink", "rmdir",
    "removedirs", "rename", "renames", "replace", "truncate", "ftruncate", "chmod", "fchmod", "lchmod",
    "chown", "fchown", "lchown", "chdir", "fchdir", "chroot", "setuid", "setgid", "seteuid", "setegid",
    "setreuid", "setregid", "link", "symlink", "mkfifo", "mknod", "plock",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _limit(which, soft, hard=None):
    try:
        _, cur_hard = resource.getrlimit(which)
        hard = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(which, (soft, hard))
    except (OSError, ValueError):
        pass


def _die_with_parent(parent):
    """SIGKILL when the scoring process dies (even by SIGKILL): an answer that sleeps forever is no orphan."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL (Linux; elsewhere the wall timeout only)
    except (OSError, AttributeError, ImportError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _no_network():
    """No new sockets; wrapping an existing descriptor (socketpair, fromfd) stays possible, so asyncio's
    event loop still works. Connecting, listening and DNS all need a new socket and fail with PermissionError."""
    import _socket
    import socket

    class GuardedSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                raise PermissionError("network access is disabled in the code sandbox")
            super().__init__(family, type, proto, fileno)

    raw_init = _socket.socket.__init__

    class GuardedRawSocket(_socket.socket):  # socket.socket.__init__ calls _socket.socket.__init__ by name
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                raise PermissionError("network access is disabled in the code sandbox")
            raw_init(self, family, type, proto, fileno)

    socket.socket = socket.SocketType = GuardedSocket
    _socket.socket = _socket.SocketType = GuardedRawSocket

    def no_dns(*args, **kwargs):
        raise PermissionError("network access is disabled in the code sandbox")

    socket.getaddrinfo = _socket.getaddrinfo = no_dns


def _guard(root):
    """Writes only below ``root`` (the fresh temp dir); no spawning, killing, deleting or renaming; no sockets."""
    import posix

    _no_network()

    for name in _SPAWN_AND_DESTROY:
        for mod in (os, posix):
            if hasattr(mod, name):
                setattr(mod, name, None)
    try:
        import _posixsubprocess  # subprocess stays importable (asyncio imports it), but cannot spawn

        _posixsubprocess.fork_exec = None
    except ImportError:
        pass
    for name in ("ctypes", "_ctypes"):
        sys.modules[name] = None  # type: ignore[assignment]
    real_open, real_os_open = builtins.open, os.open
    realpath = os.path.realpath

    def inside(path):
        if isinstance(path, int):
            return True
        p = realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep)

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and not inside(path):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = guarded_open
    os.open = guarded_os_open
    import io
    io.open = guarded_open


def main():
    with open(sys.argv[1], encoding="ascii") as f:
        payload = json.load(f)
    os.unlink(sys.argv[1])
    _die_with_parent(payload.get("parent", os.getppid()))
    lim = payload["limits"]
    _limit(resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1)
    _limit(resource.RLIMIT_AS, lim["memory_bytes"])
    _limit(resource.RLIMIT_FSIZE, lim["file_bytes"])
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, 64)
    if hasattr(resource, "RLIMIT_NPROC"):
        _limit(resource.RLIMIT_NPROC, 0)  # no new processes or threads (not enforced for root)
    nonce = payload["nonce"]
    out_fd = os.dup(1)  # non-inheritable: a spawned grandchild would not hold the pipe open
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    write, exit_now = os.write, os._exit

    def emit(obj):
        try:
            write(out_fd, (nonce + " " + json.dumps(obj) + "\n").encode())
        except BaseException:
            pass

    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    _guard(os.path.realpath(os.getcwd()))
    ns = {"__name__": "__answer__", "__builtins__": builtins}
    try:
        exec(compile(payload["code"], "<answer>", "exec", dont_inherit=True), ns)
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: the answer failed to load
        emit({"load": type(e).__name__})
        exit_now(0)
    emit({"load": None})
    for i, test in enumerate(payload["tests"]):
        try:
            exec(compile(test, f"<test {i}>", "exec", dont_inherit=True), ns)
            emit({"t": i, "e": None})
        except BaseException as e:
            emit({"t": i, "e": type(e).__name__})
    emit({"done": True})
    exit_now(0)  # no interpreter teardown: faster, and threads or atexit hooks the answer left cannot hang it


main()
