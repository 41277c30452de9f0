"""Executes one submitted notebook in a fresh, limited kernel, then runs the lab's probes."""

import dataclasses
import json
import os
import pathlib
import secrets
import sys
import threading
import time

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from autograder import sandbox

KERNEL_NAME = "course-grading"
PROBE_CELL_TAG = "course-probe"
MAX_OUTPUT_BYTES = 2_000_000
WATCHDOG_PERIOD_S = 0.5
PROBE_TIMEOUT_S = 600
# After a time-out the kernel may still be busy (a loop that swallows interrupts).
PROBE_TIMEOUT_AFTER_TIMEOUT_S = 60
# How long a kernel gets to answer an interrupt before it is killed.
INTERRUPT_GRACE_S = 20
STARTUP_TIMEOUT_S = 120


@dataclasses.dataclass
class ExecutionResult:
    """What happened when a notebook ran."""

    notebook: nbformat.NotebookNode
    probe_dir: pathlib.Path
    seconds: float
    errors: list  # one entry per cell that raised: {"cell": index, "error": "Name: message"}
    stopped: str = ""  # why execution stopped early ("", "timeout", "memory", "kernel died")
    probe_ran: bool = False
    peak_memory_mb: float = 0.0


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

    def run(self):
        while not self._stop_event.wait(WATCHDOG_PERIOD_S):
            pid = sandbox.kernel_pid(self.kernel_manager)
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


def _kernel_manager(work_dir, environment, memory_limit_mb):
    kernels_dir = work_dir / "kernels"
    spec_dir = kernels_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": sandbox.kernel_argv(work_dir, memory_limit_mb),
        "display_name": "Course grading kernel",
        "language": "python",
        # Interrupts go over the control channel: a signal would stop at bubblewrap.
        "interrupt_mode": "message",
        "env": environment,
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


def _cell_error(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"[:500]
    return None


def execute_notebook(notebook, work_dir, probe_cell_source, timeout_s, memory_limit_mb, environment):
    """Runs the student's cells, then the probe cell, in a fresh sandboxed kernel.

    Args:
        notebook: a validated nbformat v4 notebook (the submission; not modified).
        work_dir: an empty scratch folder for this submission.
        probe_cell_source: a function `probe_dir -> cell source` (the probe dir is made
            only once the student's cells have finished).
        timeout_s: wall-clock limit for the student's cells together.
        memory_limit_mb: the kernel (and its children) are killed above this.
        environment: environment variables of the kernel.

    Returns:
        An `ExecutionResult`; never raises for anything the notebook does.
    """
    work_dir = pathlib.Path(work_dir)
    run_dir = work_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    environment = dict(environment)
    for name in ("home", "tmp"):
        (work_dir / name).mkdir(exist_ok=True)
    environment.update(
        HOME=str(work_dir / "home"),
        TMPDIR=str(work_dir / "tmp"),
        MPLCONFIGDIR=str(work_dir / "home"),
        KERAS_HOME=str(work_dir / "home" / ".keras"),
    )
    kernel_manager = _kernel_manager(work_dir, environment, memory_limit_mb)
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
    result = ExecutionResult(notebook=notebook, probe_dir=work_dir / "probe", seconds=0.0, errors=[])
    started = time.time()
    deadline = started + timeout_s
    watchdog = _Watchdog(kernel_manager, memory_limit_mb)
    kernel_log = open(work_dir / "kernel.log", "wb")
    try:
        with client.setup_kernel(cwd=str(run_dir), stdout=kernel_log, stderr=kernel_log):
            watchdog.kill_at = deadline + INTERRUPT_GRACE_S
            watchdog.start()
            result.stopped = _run_student_cells(client, notebook, deadline, result)
            result.seconds = round(time.time() - started, 2)
            if not watchdog.killed_for:
                probe_limit = _probe_timeout(result.stopped)
                watchdog.kill_at = time.time() + probe_limit + INTERRUPT_GRACE_S
                result.probe_ran = _run_probe(client, notebook, probe_cell_source, work_dir, probe_limit, result)
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
        result.probe_ran = result.probe_ran and watchdog.killed_for != "memory"
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
        client.timeout = int(remaining)
        client.execute_cell(cell, index)
        if time.time() >= deadline:
            return "timeout"
    return ""


def _probe_timeout(stopped):
    return PROBE_TIMEOUT_AFTER_TIMEOUT_S if stopped == "timeout" else PROBE_TIMEOUT_S


def _run_probe(client, notebook, probe_cell_source, work_dir, probe_limit, result):
    # A fresh, unguessable folder, made only now, so no student cell can prepare it.
    probe_dir = work_dir / f"probe-{secrets.token_hex(8)}"
    probe_dir.mkdir()
    result.probe_dir = probe_dir
    cell = nbformat.v4.new_code_cell(probe_cell_source(probe_dir))
    cell.metadata["tags"] = [PROBE_CELL_TAG]
    notebook.cells.append(cell)
    client.timeout = probe_limit
    client.execute_cell(cell, len(notebook.cells) - 1)
    error = _cell_error(cell)
    if error:
        result.errors.append({"cell": "probe", "error": error})
    return (probe_dir / "probe.json").is_file() and (probe_dir / "probe.npz").is_file()


def python_executable():
    """The interpreter that runs kernels (the grader's own, so course_lib is importable)."""
    return sys.executable


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
    return environment
