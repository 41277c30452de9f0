"""Process limits and isolation for grading kernels.

`kernel_argv` is the command line the kernel spec uses: this module runs first
(`python -m autograder.sandbox ...`), sets resource limits, starts a new session, and
then executes the real kernel, inside bubblewrap when it is available (no network, and
only the files the kernel needs are visible).
"""

import argparse
import os
import pathlib
import resource
import shutil
import signal
import sys

import psutil

MAX_FILE_BYTES = 2 * 1024**3
ISOLATION_ENV_VAR = "COURSE_GRADER_ISOLATION"  # "auto" (default), "bwrap" or "none"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")


def kernel_argv(work_dir, memory_limit_mb):
    """Returns the kernel spec argv: this launcher, then the IPython kernel."""
    return [
        sys.executable,
        "-m",
        "autograder.sandbox",
        "--work-dir",
        str(work_dir),
        "--",
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]


def kernel_pid(kernel_manager):
    """Returns the pid of a KernelManager's kernel process, or None."""
    provisioner = getattr(kernel_manager, "provisioner", None)
    process = getattr(provisioner, "process", None)
    return getattr(process, "pid", None)


def tree_memory_mb(pid):
    """Resident memory of a process and all its descendants, in MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def kill_tree(pid):
    """Kills a process and all its descendants (SIGKILL)."""
    try:
        root = psutil.Process(pid)
        processes = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def reap(pid, timeout_s=5):
    """Waits for a killed child so that it leaves no zombie behind."""
    try:
        psutil.Process(pid).wait(timeout_s)
    except (psutil.Error, ChildProcessError):
        pass


def bubblewrap_path():
    """Returns the bwrap executable when isolation with it is wanted and works, else None."""
    mode = os.environ.get(ISOLATION_ENV_VAR, "auto")
    if mode == "none":
        return None
    path = shutil.which("bwrap")
    if path is None and mode == "bwrap":
        raise RuntimeError(
            f"{ISOLATION_ENV_VAR}=bwrap but bubblewrap is not installed "
            f"(apt-get install bubblewrap)."
        )
    return path


def isolation_mode():
    """Describes the isolation grading kernels get here, for reports."""
    return "bwrap" if bubblewrap_path() else "process"


def _visible_paths(work_dir):
    """What a sandboxed kernel may read: the interpreter, its packages, course_lib, data."""
    import course_lib  # the kernel imports it; its folder is all it sees of the project

    paths = {pathlib.Path(sys.prefix), pathlib.Path(sys.base_prefix)}
    paths.add(pathlib.Path(course_lib.__file__).resolve().parent)
    data_dir = os.environ.get("COURSE_DATA_DIR")
    if data_dir:
        paths.add(pathlib.Path(data_dir).resolve())
    for entry in sys.path:
        if entry and pathlib.Path(entry).is_dir() and "site-packages" in entry:
            paths.add(pathlib.Path(entry).resolve())
    return sorted(str(path) for path in paths if path.exists())


def _bubblewrap_argv(bwrap, work_dir, command):
    argv = [bwrap, "--die-with-parent", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--new-session", "--proc", "/proc", "--dev-bind", "/dev", "/dev", "--tmpfs", "/tmp"]
    for system_dir in SYSTEM_DIRS:
        if os.path.exists(system_dir):
            argv += ["--ro-bind", system_dir, system_dir]
    for path in _visible_paths(work_dir):
        argv += ["--ro-bind", path, path]
    argv += ["--bind", str(work_dir), str(work_dir), "--chdir", str(pathlib.Path(work_dir) / "run")]
    return argv + ["--"] + command


def _set_limits():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Start a grading kernel with limits.")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("no kernel command given after --")
    _set_limits()
    bwrap = bubblewrap_path()
    if bwrap:
        # In its own pid namespace the kernel's parent is bwrap's pid 1, which ipykernel
        # would take for "parent gone"; --die-with-parent covers that case instead.
        os.environ.pop("JPY_PARENT_PID", None)
        command = _bubblewrap_argv(bwrap, arguments.work_dir, command)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
