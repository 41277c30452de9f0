"""Executes one submitted notebook in a fresh, limited kernel, then exports what it produced."""

import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import stat
import threading
import time

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from autograder import sandbox

KERNEL_NAME = "course-grading"
PROBE_CELL_TAG = "course-probe"  # the grader's own cells (the export), left out of feedback
MAX_OUTPUT_BYTES = 2_000_000
WATCHDOG_PERIOD_S = 0.5
EXPORT_TIMEOUT_S = 300
# After a time-out the kernel may still be busy (a loop that swallows interrupts): the export
# then gets this long, and never longer than the notebook's own limit.
EXPORT_TIMEOUT_AFTER_TIMEOUT_S = 60
EXPORT_DIR_NAME = "export"
# How long a kernel gets to answer an interrupt before it is killed.
INTERRUPT_GRACE_S = 20
STARTUP_TIMEOUT_S = 120


@dataclasses.dataclass
class ExecutionResult:
    """What happened when a notebook ran."""

    notebook: nbformat.NotebookNode
    export_dir: pathlib.Path
    seconds: float
    errors: list  # one entry per cell that raised: {"cell": index, "error": "Name: message"}
    stopped: str = ""  # why execution stopped early ("", "timeout", "memory", "kernel died")
    exported: bool = False
    peak_memory_mb: float = 0.0
    kernel_started: bool = False


class _LimitedClient(NotebookClient):
    """A NotebookClient that keeps at most MAX_OUTPUT_BYTES of output in the notebook."""

    output_bytes = 0
    truncated = False

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        self.output_bytes += size
        if self.output_bytes > MAX_OUTPUT_BYTES:
            if not self.truncated:
                self.truncated = True
                outs.append(
                    nbformat.v4.new_output(
                        "stream",
                        name="stderr",
                        text=f"[grader] output truncated: over {MAX_OUTPUT_BYTES} bytes.\n",
                    )
                )
            return None
        return super().output(outs, msg, display_id, cell_index)


class _Watchdog(threading.Thread):
    """Kills the kernel above its memory limit or past `kill_at`; records peak memory.

    The wall-clock kill is the backstop for kernels that ignore interrupts.
    """

    def __init__(self, kernel_manager, memory_limit_mb):
        super().__init__(daemon=True)
        self.kernel_manager = kernel_manager
        self.memory_limit_mb = memory_limit_mb
        self.kill_at = float("inf")
        self.peak_mb = 0.0
        self.killed_for = ""
        self._stop_event = threading.Event()

    def _pid(self):
        return sandbox.kernel_pid(self.kernel_manager)

    def run(self):
        while not self._stop_event.wait(WATCHDOG_PERIOD_S):
            pid = self._pid()
            if pid is None:
                continue
            used_mb = sandbox.tree_memory_mb(pid)
            self.peak_mb = max(self.peak_mb, used_mb)
            if used_mb > self.memory_limit_mb:
                self.killed_for = "memory"
            elif time.time() > self.kill_at:
                self.killed_for = "timeout"
            if self.killed_for:
                sandbox.kill_tree(pid)
                return

    def stop(self):
        self._stop_event.set()


def _kernel_manager(work_dir, environment, isolation, readable, hidden):
    kernels_dir = work_dir / "kernels"
    spec_dir = kernels_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    command = [sandbox.interpreter(), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {
        # The launcher gives the kernel exactly `environment` (jupyter_client would add
        # the grader's whole environment), its limits and its sandbox.
        "argv": sandbox.launcher_argv(command, work_dir=work_dir, isolation=isolation, env=environment,
                                      readable=readable, hidden=hidden),
        "display_name": "Course grading kernel",
        "language": "python",
        # Interrupts go over the control channel: a signal would stop at bubblewrap.
        "interrupt_mode": "message",
        "env": {},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    spec_manager.ensure_native_kernel = False
    kernel_manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)
    kernel_manager.transport = "ipc"
    kernel_manager.ip = str(work_dir / "ipc" / "kernel")
    kernel_manager.connection_file = str(work_dir / "ipc" / "connection.json")
    (work_dir / "ipc").mkdir(exist_ok=True)
    return kernel_manager


def _make_home_folders(work_dir):
    """The HOME and TMPDIR that the environment (`grade._kernel_environment`) points into."""
    for name in ("home", "tmp"):
        (pathlib.Path(work_dir) / name).mkdir(parents=True, exist_ok=True)


def _cell_error(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"[:500]
    return None


def execute_notebook(notebook, work_dir, export_cell_source, timeout_s, memory_limit_mb, environment,
                     isolation="process", readable=(), hidden=()):
    """Runs the student's cells, then the export cell, in a fresh sandboxed kernel.

    Args:
        notebook: a validated nbformat v4 notebook (the submission; not modified).
        work_dir: an empty scratch folder for this submission (short and absolute: the
            kernel's sockets live in it).
        export_cell_source: a function `export_dir -> cell source` that saves what the
            notebook produced; nothing is judged in the kernel.
        timeout_s: wall-clock limit for the student's cells together.
        memory_limit_mb: the kernel (and its children) are killed above this.
        environment: the kernel's complete environment (an allow-list).
        isolation: "bwrap" or "process" (see `sandbox.isolation_mode`).
        readable, hidden: paths the sandbox shows read-only / withholds.

    Returns:
        An `ExecutionResult`; never raises for anything the notebook does.
    """
    work_dir = pathlib.Path(work_dir).resolve()
    run_dir = work_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    _make_home_folders(work_dir)
    kernel_manager = _kernel_manager(work_dir, environment, isolation, readable, hidden)
    client = _LimitedClient(
        notebook,
        km=kernel_manager,
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": "TimeoutError", "evalue": "the notebook ran past its time limit"},
        startup_timeout=STARTUP_TIMEOUT_S,
        record_timing=False,
        shutdown_kernel="immediate",
    )
    result = ExecutionResult(notebook=notebook, export_dir=work_dir / EXPORT_DIR_NAME, seconds=0.0, errors=[])
    started = time.time()
    deadline = started + timeout_s
    watchdog = _Watchdog(kernel_manager, memory_limit_mb)
    kernel_log = open(work_dir / "kernel.log", "wb")
    try:
        with client.setup_kernel(cwd=str(run_dir), stdout=kernel_log, stderr=kernel_log):
            result.kernel_started = True
            watchdog.kill_at = deadline + INTERRUPT_GRACE_S
            watchdog.start()
            result.stopped = _run_student_cells(client, notebook, deadline, result)
            result.seconds = round(time.time() - started, 2)
            if not watchdog.killed_for:
                export_limit = _export_timeout(result.stopped, timeout_s)
                watchdog.kill_at = time.time() + export_limit + INTERRUPT_GRACE_S
                result.exported = _run_export(client, notebook, export_cell_source, result.export_dir,
                                              export_limit, result)
    except DeadKernelError:
        result.stopped = result.stopped or "kernel died"
    except Exception as error:  # the kernel failed to start, or the client broke
        result.stopped = result.stopped or f"kernel error: {type(error).__name__}: {error}"
    finally:
        kernel_log.close()
        watchdog.stop()
        pid = sandbox.kernel_pid(kernel_manager)
        if pid is not None:
            sandbox.kill_tree(pid)
            sandbox.reap(pid)
    if watchdog.killed_for:
        result.stopped = watchdog.killed_for
        result.exported = result.exported and watchdog.killed_for != "memory"
    result.seconds = result.seconds or round(time.time() - started, 2)
    result.peak_memory_mb = round(watchdog.peak_mb, 1)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and PROBE_CELL_TAG not in cell.metadata.get("tags", []):
            error = _cell_error(cell)
            if error:
                result.errors.append({"cell": index, "error": error})
    return result


def _run_student_cells(client, notebook, deadline, result):
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        remaining = deadline - time.time()
        if remaining <= 1:
            return "timeout"
        # Rounded up: nbclient's own time-out then falls at or after the deadline, so a last
        # cell interrupted at the limit is reported as a time-out (int() ended it up to 1 s
        # early: no time-out was reported and the export got the full EXPORT_TIMEOUT_S).
        client.timeout = math.ceil(remaining)
        client.execute_cell(cell, index)
        if time.time() >= deadline:
            return "timeout"
    return ""


def _export_timeout(stopped, timeout_s):
    """The export's limit: after a time-out, at most the notebook's own limit (a 15-s limit waits 15 s, not 60)."""
    if stopped == "timeout":
        return max(1, min(EXPORT_TIMEOUT_AFTER_TIMEOUT_S, int(timeout_s)))
    return EXPORT_TIMEOUT_S


def _run_export(client, notebook, export_cell_source, export_dir, limit, result):
    cell = nbformat.v4.new_code_cell(export_cell_source(export_dir))
    cell.metadata["tags"] = [PROBE_CELL_TAG]
    notebook.cells.append(cell)
    client.timeout = limit
    client.execute_cell(cell, len(notebook.cells) - 1)
    error = _cell_error(cell)
    if error:
        result.errors.append({"cell": "export", "error": error})
    return (export_dir / "manifest.json").is_file()


def base_environment(profile, data_dir):
    """The environment a grading kernel gets: nothing from the grader beyond what it needs."""
    keep = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH", "TFDS_DATA_DIR")
    environment = {name: os.environ[name] for name in keep if name in os.environ}
    environment.update(
        {
            "KERAS_BACKEND": "torch",
            "COURSE_PROFILE": profile,
            # The inline backend, as in Jupyter: figures reach the feedback notebook.
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if data_dir:
        environment["COURSE_DATA_DIR"] = str(data_dir)
    if environment.get("TFDS_DATA_DIR"):
        # Sandboxes show it at its real path (grade._readable_paths), as they do the data.
        environment["TFDS_DATA_DIR"] = os.path.realpath(environment["TFDS_DATA_DIR"])
    return environment


MAX_EXPORT_BYTES = 4 * 1024**3
SAFE_EXPORT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def copy_export(source, destination):
    """Copies the kernel's export into a folder of the grader's own.

    Only regular files with plain names are taken (never symlinks, whatever the kernel left
    there), up to MAX_EXPORT_BYTES in all, so the probe process sees nothing else of the host.

    Returns:
        The number of files copied.
    """
    destination = pathlib.Path(destination)
    destination.mkdir(mode=0o755)
    copied, total = 0, 0
    try:
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            return 0
        entries = list(os.scandir(source))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not SAFE_EXPORT_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            if total + size > MAX_EXPORT_BYTES:
                break
            descriptor = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(descriptor, "rb") as reader, open(destination / entry.name, "wb") as writer:
                shutil.copyfileobj(reader, writer)
            (destination / entry.name).chmod(0o644)
            total += size
            copied += 1
        except OSError:
            continue
    return copied


@dataclasses.dataclass
class ProbeRun:
    """What happened when the probe process ran."""

    ok: bool
    seconds: float
    problem: str = ""  # why there are no results ("" when ok)
    peak_memory_mb: float = 0.0


def run_probe_process(request_text, work_dir, out_dir, timeout_s, memory_limit_mb, environment,
                      isolation="process", readable=(), hidden=()):
    """Runs the lab's probes in a fresh sandboxed process; writes out_dir/probe.json + probe.npz.

    The process never runs the notebook's top-level code: it loads the kernel's export and
    executes only the notebook's definitions, one forked child per probe item. Its results
    come back over its stdout (to this process) and are written here, outside every sandbox.

    Args:
        request_text: the JSON request (`assemble.host_request`).
        work_dir: an empty scratch folder for the process (its HOME and TMPDIR).
        out_dir: where probe.json and probe.npz are written (grader-owned).
        timeout_s: wall-clock limit for all the probes together.
        memory_limit_mb: the process tree is killed above this.
        environment: the process's complete environment.
        isolation, readable, hidden: as for `execute_notebook`.

    Returns:
        A `ProbeRun`.
    """
    import subprocess

    import numpy as np

    from autograder.probes.assemble import HOST_BOOTSTRAP
    from autograder.probes.runtime import _course_unpack

    work_dir = pathlib.Path(work_dir).resolve()
    _make_home_folders(work_dir)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sandbox.interpreter(), "-c", HOST_BOOTSTRAP]
    argv = sandbox.launcher_argv(command, work_dir=work_dir, isolation=isolation, env=environment,
                                 readable=readable, hidden=hidden)
    started = time.time()
    with open(work_dir.parent / "probe.log", "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True)
        watchdog = _ProcessWatchdog(process.pid, memory_limit_mb, started + timeout_s)
        watchdog.start()
        try:
            output, _ = process.communicate(request_text.encode(), timeout=timeout_s + INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            sandbox.kill_tree(process.pid)
            output, _ = process.communicate()
            watchdog.killed_for = watchdog.killed_for or "timeout"
        finally:
            watchdog.stop()
            sandbox.kill_tree(process.pid)
    seconds = round(time.time() - started, 2)
    run = ProbeRun(ok=False, seconds=seconds, peak_memory_mb=round(watchdog.peak_mb, 1))
    if watchdog.killed_for == "memory":
        run.problem = f"the probes used more than {memory_limit_mb} MB of memory and were stopped"
        return run
    if watchdog.killed_for == "timeout":
        run.problem = f"the probes ran past their time limit of {timeout_s} s"
        return run
    try:
        document, arrays = _course_unpack(output)
    except Exception:
        run.problem = f"the probe process failed (exit code {process.returncode}); see probe.log"
        return run
    np.savez(out_dir / "probe.npz", **arrays)
    (out_dir / "probe.json").write_text(json.dumps(document))
    run.ok = True
    return run


class _ProcessWatchdog(_Watchdog):
    """The kernel watchdog for a plain process: memory limit and a wall-clock kill."""

    def __init__(self, pid, memory_limit_mb, kill_at):
        super().__init__(None, memory_limit_mb)
        self.pid = pid
        self.kill_at = kill_at

    def _pid(self):
        return self.pid
