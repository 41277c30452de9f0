"""Process limits and isolation for grading kernels.

`launcher_argv` builds the command line that runs a program (the IPython kernel) through
this module's launcher, `python -m autograder.sandbox ...`. The launcher sets resource
limits and then runs the program either

* in "bwrap" isolation: inside bubblewrap as an unprivileged user with no capabilities,
  no network, private pid/ipc/uts namespaces, a minimal /dev, private size-limited
  /tmp and /dev/shm, only the system folders, the explicitly readable paths (read-only)
  and the work dir (read-write) visible, and exactly the environment it is given; or
* in "process" isolation: as a new session with limits and exactly the given
  environment, nothing more.

`isolation_mode()` says which of the two kernels actually get here (it runs a real
preflight sandbox before promising "bwrap").

The launcher only needs the standard library (psutil is imported where it is used), so
it also runs under interpreters that lack the course's packages.
"""

import argparse
import ctypes
import errno
import importlib.util
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

MAX_FILE_BYTES = 2 * 1024**3
DEFAULT_TMPFS_MB = 1024
ISOLATION_ENV_VAR = "COURSE_GRADER_ISOLATION"  # "auto" (default) | "bwrap" | "none"
SANDBOX_UID_ENV_VAR = "COURSE_SANDBOX_UID"  # default 65534 (nobody); also used as gid
DEFAULT_SANDBOX_UID = 65534
ISOLATION_VALUES = ("auto", "bwrap", "none")
PREFLIGHT_TIMEOUT_S = 60

WITHHELD_MODULE = pathlib.Path(__file__).resolve().parent / "withheld_module.py"

# Top-level system folders: a symlink (e.g. /lib -> usr/lib) is recreated as a symlink,
# a real folder is bound read-only.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# From /etc only what ordinary programs read; never shadow/gshadow, ssh keys, sudoers...
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "fonts",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "matplotlibrc",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "protocols",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
)

_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
# Where the root launcher stages bind sources (in its own private mount namespace only),
# so that bubblewrap, running unprivileged, can reach sources under folders such as a
# 0700 /root. bubblewrap builds its own /dev and /dev/shm, so covering it here is harmless.
_STAGING_DIR = "/dev/shm"

_isolation_cache = None


class SandboxError(RuntimeError):
    """The grading sandbox cannot be set up here (an infrastructure problem, not the student's)."""


# --------------------------------------------------------------------------- mode


def _requested_isolation():
    value = os.environ.get(ISOLATION_ENV_VAR, "auto").strip().lower() or "auto"
    if value not in ISOLATION_VALUES:
        raise SandboxError(
            f"{ISOLATION_ENV_VAR}={os.environ.get(ISOLATION_ENV_VAR)!r} is not a known "
            f"isolation setting; set it to one of {', '.join(ISOLATION_VALUES)} "
            f"(or unset it for 'auto')."
        )
    return value


def _setup_instructions():
    return (
        "To get bubblewrap isolation: install it (apt-get install bubblewrap); enable "
        "unprivileged user namespaces (sysctl -w kernel.unprivileged_userns_clone=1 "
        "where that setting exists, and user.max_user_namespaces > 0; on Ubuntu 24.04+ "
        "also kernel.apparmor_restrict_unprivileged_userns=0); in Docker run the "
        "container with --security-opt seccomp=unconfined (or run the grader on the "
        "host). Or set "
        f"{ISOLATION_ENV_VAR}=none to accept grading without isolation."
    )


def _preflight():
    """Starts one real sandbox with the real policy; returns None if it works, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed or not on PATH"
    work_dir = tempfile.mkdtemp(prefix="course-sandbox-preflight-")
    try:
        command = [interpreter(), "-c", "print('ok')"]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        argv = launcher_argv(
            command, work_dir=work_dir, isolation="bwrap", env=env,
            readable=default_readable(),
        )
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=PREFLIGHT_TIMEOUT_S,
                cwd=str(pathlib.Path(__file__).resolve().parent.parent),
            )
        except subprocess.TimeoutExpired:
            return f"a test sandbox did not finish within {PREFLIGHT_TIMEOUT_S} s"
        except OSError as error:
            return f"a test sandbox could not be started: {error}"
        if result.returncode != 0 or result.stdout.strip() != "ok":
            detail = (result.stderr.strip() or result.stdout.strip() or "no output")[-800:]
            return (
                f"a test sandbox (bwrap) failed with exit status {result.returncode}: "
                f"{detail}"
            )
        return None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def isolation_mode():
    """Says what isolation grading kernels actually get in this process.

    Resolves `COURSE_GRADER_ISOLATION` once per process (the answer is cached):
    "none" gives "process"; "bwrap" runs a preflight sandbox and fails if it does not
    work; "auto" (the default) runs the same preflight and falls back to "process" with
    one warning on stderr.

    Returns:
        "bwrap" or "process".

    Raises:
        SandboxError: the setting is unknown, or it is "bwrap" and bubblewrap does not
            work here (the message says what to install or configure).
    """
    global _isolation_cache
    if _isolation_cache is not None:
        return _isolation_cache
    requested = _requested_isolation()
    if requested == "none":
        _isolation_cache = "process"
        return _isolation_cache
    reason = _preflight()
    if reason is None:
        _isolation_cache = "bwrap"
    elif requested == "bwrap":
        raise SandboxError(
            f"{ISOLATION_ENV_VAR}=bwrap but the bubblewrap sandbox does not work here: "
            f"{reason}. {_setup_instructions()}"
        )
    else:
        print(
            f"[grader] warning: grading kernels run WITHOUT bubblewrap isolation "
            f"(process limits only), because {reason}. {_setup_instructions()}",
            file=sys.stderr,
        )
        _isolation_cache = "process"
    return _isolation_cache


def _reset_isolation_cache():
    """Forgets the cached `isolation_mode()` answer (for tests)."""
    global _isolation_cache
    _isolation_cache = None


# --------------------------------------------------------------------------- argv


def interpreter():
    """The grader's Python as a sandbox can start it.

    Sandboxes show the Python environment at its real path (`default_readable`), so a
    `sys.executable` reached through a symlinked folder (a virtual environment that is a
    link, a course under a linked home folder) does not exist inside one. The folder is
    resolved, the file name kept: a virtual environment's `bin/python` is itself a link,
    and Python finds its environment from the folder it was started from.

    Returns:
        The path of the interpreter, as a string.
    """
    folder, name = os.path.split(sys.executable)
    return os.path.join(os.path.realpath(folder), name)


def default_readable():
    """Lists what every sandboxed grading process must be able to read.

    Returns:
        Resolved real paths of sys.prefix, sys.base_prefix, every site-packages folder
        on sys.path and the course_lib package folder (not the repository root, not
        autograder/), each once, existing ones only.
    """
    paths = [sys.prefix, sys.base_prefix]
    paths += [entry for entry in sys.path if entry and "site-packages" in entry]
    spec = importlib.util.find_spec("course_lib")  # finds it without importing it
    if spec is not None and spec.submodule_search_locations:
        paths += list(spec.submodule_search_locations)
    resolved = []
    for path in paths:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in resolved:
            resolved.append(real)
    return resolved


def launcher_argv(command, *, work_dir, isolation, env, readable=(), hidden=(), tmpfs_mb=None):
    """Builds the argv that runs `command` through this module's launcher.

    Args:
        command: the program and its arguments (a list of strings); a "{connection_file}"
            placeholder for jupyter_client is passed through untouched.
        work_dir: the folder the program may write (its cwd is work_dir/run if that
            exists, else work_dir).
        isolation: "bwrap" or "process" (as returned by `isolation_mode()`).
        env: the complete environment of the program (a mapping of str to str); the
            launcher discards its own environment.
        readable: extra paths visible read-only inside the sandbox (see
            `default_readable()`).
        hidden: files or folders inside readable paths that must not be readable in the
            sandbox: a .py file is replaced by the withheld-module stub, another file by
            an unreadable node, a folder by an empty read-only tmpfs.
        tmpfs_mb: size of the private /tmp and /dev/shm, in MiB (default 1024).

    Returns:
        The launcher's argv, a list of strings.

    Raises:
        ValueError: an argument has the wrong form (the message echoes it).
    """
    command = [str(part) for part in command]
    if not command:
        raise ValueError("launcher_argv got an empty command; pass the program and its arguments.")
    if isolation not in ("bwrap", "process"):
        raise ValueError(
            f"launcher_argv got isolation={isolation!r}; pass 'bwrap' or 'process' "
            f"(what isolation_mode() returns)."
        )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(env).items()):
        raise ValueError(f"launcher_argv needs env as a mapping of str to str; got {env!r}.")
    argv = [
        sys.executable, "-m", "autograder.sandbox",
        "--work-dir", os.path.abspath(str(work_dir)),
        "--isolation", isolation,
        "--env-json", json.dumps(dict(env)),
    ]
    for path in readable:
        argv += ["--read", os.path.abspath(str(path))]
    for path in hidden:
        argv += ["--hide", os.path.abspath(str(path))]
    if tmpfs_mb is not None:
        if int(tmpfs_mb) <= 0:
            raise ValueError(f"launcher_argv got tmpfs_mb={tmpfs_mb!r}; pass a positive size in MiB.")
        argv += ["--tmpfs-mb", str(int(tmpfs_mb))]
    return argv + ["--"] + command


# --------------------------------------------------------------------------- process tree


def kernel_pid(kernel_manager):
    """Returns the pid of a KernelManager's kernel process (the launcher), or None."""
    provisioner = getattr(kernel_manager, "provisioner", None)
    process = getattr(provisioner, "process", None)
    return getattr(process, "pid", None)


def _root_identity(pid):
    try:
        status = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def _tmpfs_used_bytes(root):
    """Bytes held by the /tmp and /dev/shm tmpfs seen from `root`, keyed by device."""
    used = {}
    for mount in ("tmp", "dev/shm"):
        path = os.path.join(root, mount)
        try:
            device = os.stat(path).st_dev
            stats = os.statvfs(path)
        except OSError:
            continue
        used[device] = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return used


def tree_memory_mb(pid):
    """Memory held by a process tree, in MiB; never raises.

    Args:
        pid: the root of the tree (the launcher's pid).

    Returns:
        The resident memory of the process and all its descendants, plus what the
        private /tmp and /dev/shm tmpfs of their sandboxes hold (each sandbox counted
        once); 0.0 if the process is gone.
    """
    try:
        import psutil

        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except Exception:
        return 0.0
    total = 0
    own_root = _root_identity("self")
    own_devices = set(_tmpfs_used_bytes("/"))
    tmpfs = {}
    for process in processes:
        try:
            total += process.memory_info().rss
        except Exception:
            pass
        try:
            identity = _root_identity(process.pid)
            if identity is None or identity == own_root:
                continue
            for device, used in _tmpfs_used_bytes(f"/proc/{process.pid}/root").items():
                if device not in own_devices:
                    tmpfs[device] = used
        except Exception:
            pass
    return (total + sum(tmpfs.values())) / 2**20


def kill_tree(pid):
    """Kills a process and all its descendants (SIGKILL); never raises."""
    try:
        import psutil

        root = psutil.Process(pid)
        processes = root.children(recursive=True) + [root]
    except Exception:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except Exception:
            pass


def reap(pid, timeout_s=5):
    """Waits for a killed child so that it leaves no zombie behind; never raises."""
    try:
        import psutil

        psutil.Process(pid).wait(timeout_s)
    except Exception:
        pass


# --------------------------------------------------------------------------- launcher


def sandbox_uid():
    """The uid (and gid) sandboxed programs run as.

    Returns:
        The integer from COURSE_SANDBOX_UID, default 65534.

    Raises:
        SandboxError: the setting is not a positive integer.
    """
    value = os.environ.get(SANDBOX_UID_ENV_VAR, str(DEFAULT_SANDBOX_UID))
    try:
        uid = int(value)
    except ValueError:
        uid = -1
    if uid <= 0:
        raise SandboxError(
            f"{SANDBOX_UID_ENV_VAR}={value!r} is not a usable sandbox uid; set it to a "
            f"positive integer uid with no privileges (default {DEFAULT_SANDBOX_UID}, nobody)."
        )
    return uid


def _set_limits():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))


def _libc_call(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


class _Policy:
    """The bubblewrap mounts: (kind, source, dest) in order, sources staged if possible."""

    def __init__(self, work_dir, readable, hidden):
        self.ops = []
        for system_dir in SYSTEM_DIRS:
            if os.path.islink(system_dir):
                self.ops.append(("symlink", os.readlink(system_dir), system_dir))
            elif os.path.isdir(system_dir):
                self.ops.append(("ro", system_dir, system_dir))
        for entry in ETC_ENTRIES:
            path = os.path.join("/etc", entry)
            if os.path.islink(path):
                self.ops.append(("symlink", os.readlink(path), path))
            elif os.path.exists(path):
                self.ops.append(("ro", path, path))
        for path in sorted(set(readable), key=lambda p: (p.count("/"), p)):
            if os.path.exists(path):
                self.ops.append(("ro", os.path.realpath(path), path))
        self.ops.append(("rw", work_dir, work_dir))
        for path in sorted(set(hidden), key=lambda p: (p.count("/"), p)):
            if os.path.isdir(path):
                self.ops.append(("tmpfs", None, path))
            elif os.path.exists(path):
                source = str(WITHHELD_MODULE) if path.endswith(".py") else "/dev/null"
                self.ops.append(("ro", source, path))

    def stage(self):
        """As root: bind every source under a traversable private folder; False if not possible."""
        fds = []
        try:
            if hasattr(os, "unshare"):
                os.unshare(_CLONE_NEWNS)
            else:
                _libc_call("unshare", _CLONE_NEWNS)
            # Nothing below may propagate back to the host's mounts.
            _libc_call("mount", b"none", b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None)
            # Opened in the new namespace (binds from another namespace's mounts fail) and
            # before the staging tmpfs covers anything.
            for kind, source, _ in self.ops:
                fds.append(os.open(source, os.O_PATH | os.O_CLOEXEC) if kind in ("ro", "rw") else None)
            _libc_call(
                "mount", b"tmpfs", _STAGING_DIR.encode(), b"tmpfs",
                ctypes.c_ulong(_MS_NOSUID | _MS_NODEV), b"mode=0755,size=1m",
            )
            staged = []
            for index, ((kind, source, dest), fd) in enumerate(zip(self.ops, fds)):
                if fd is None:
                    staged.append((kind, source, dest))
                    continue
                target = os.path.join(_STAGING_DIR, str(index))
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(target, 0o755)
                else:
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
                _libc_call(
                    "mount", f"/proc/self/fd/{fd}".encode(), target.encode(), None,
                    ctypes.c_ulong(_MS_BIND | _MS_REC), None,
                )
                staged.append((kind, target, dest))
            self.ops = staged
            return True
        except OSError as error:
            print(
                f"[sandbox] note: could not stage bind sources ({error}); bubblewrap will "
                f"open them directly, so each must be reachable by the sandbox user.",
                file=sys.stderr,
            )
            return False
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)

    def bwrap_args(self):
        args = []
        for kind, source, dest in self.ops:
            if kind == "symlink":
                args += ["--symlink", source, dest]
            elif kind == "ro":
                args += ["--ro-bind", source, dest]
            elif kind == "rw":
                args += ["--bind", source, dest]
            elif kind == "tmpfs":
                args += ["--size", str(64 * 1024), "--tmpfs", dest, "--remount-ro", dest]
        return args


def _close_inherited_fds():
    """Closes every descriptor but stdin/stdout/stderr, so none of the grader's leaks in."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 1024)
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def _chown_tree(path, uid, gid):
    os.lchown(path, uid, gid)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, gid)


def _drop_privileges(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise SandboxError(f"could not drop privileges to uid {uid}; check {SANDBOX_UID_ENV_VAR}.")


def _bwrap_command(bwrap, arguments, env, command):
    uid = sandbox_uid()
    work_dir = arguments.work_dir
    tmpfs_bytes = str(arguments.tmpfs_mb * 1024 * 1024)
    policy = _Policy(work_dir, arguments.read, arguments.hide)
    if os.geteuid() == 0:
        policy.stage()
        # The grader (root) wrote the connection file 0600; the kernel must read it.
        _chown_tree(work_dir, uid, uid)
        _drop_privileges(uid, uid)
    run_dir = os.path.join(work_dir, "run")
    argv = [
        bwrap,
        "--unshare-user", "--uid", str(uid), "--gid", str(uid), "--disable-userns",
        "--cap-drop", "ALL",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", "sandbox",
        "--die-with-parent", "--new-session", "--clearenv",
    ]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # Before the binds, so that a work dir or readable path under /tmp is not covered.
    argv += ["--size", tmpfs_bytes, "--tmpfs", "/tmp"]
    argv += ["--size", tmpfs_bytes, "--tmpfs", "/dev/shm"]
    argv += policy.bwrap_args()
    argv += ["--remount-ro", "/"]  # the sandbox's own root: only W, /tmp, /dev/shm writable
    argv += ["--chdir", run_dir if os.path.isdir(run_dir) else work_dir]
    return argv + ["--"] + command


def main(argv=None):
    """Runs a program with limits, in the requested isolation (`python -m autograder.sandbox`).

    Args:
        argv: the launcher's arguments (default sys.argv[1:]), as built by `launcher_argv`.

    Raises:
        SystemExit: the arguments are malformed or bubblewrap is missing.
        SandboxError: privileges could not be dropped.
    """
    parser = argparse.ArgumentParser(description="Start a grading program with limits and isolation.")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--isolation", choices=("bwrap", "process"), required=True)
    parser.add_argument("--env-json", required=True)
    parser.add_argument("--read", action="append", default=[])
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--tmpfs-mb", type=int, default=DEFAULT_TMPFS_MB)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("no command given after --; pass the program to run, e.g. -- python -c 'print(1)'")
    try:
        env = json.loads(arguments.env_json)
        assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
    except (ValueError, AssertionError):
        parser.error(f"--env-json must be a JSON object of strings; got {arguments.env_json!r}")
    if arguments.tmpfs_mb <= 0:
        parser.error(f"--tmpfs-mb must be a positive size in MiB; got {arguments.tmpfs_mb}")
    arguments.work_dir = os.path.abspath(arguments.work_dir)
    if not os.path.isdir(arguments.work_dir):
        parser.error(f"--work-dir {arguments.work_dir!r} is not a folder; create it first")
    _close_inherited_fds()
    _set_limits()
    try:
        os.setsid()
    except OSError as error:
        if error.errno != errno.EPERM:  # EPERM: already a session leader
            raise
    if arguments.isolation == "process":
        os.execvpe(command[0], command, env)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        parser.error(
            "bubblewrap (bwrap) is not on PATH; apt-get install bubblewrap, "
            "or use --isolation process"
        )
    # In its own pid namespace the kernel's parent is bwrap's pid 1, which ipykernel would
    # take for "parent gone"; --die-with-parent covers that case instead.
    env.pop("JPY_PARENT_PID", None)
    os.execve(bwrap, _bwrap_command(bwrap, arguments, env, command), {})


if __name__ == "__main__":
    main()
