"""Grading a class on a Ray cluster: one Ray task per submission, each report written once.

Each task runs the local pool's job (`grade._grade_job`) on a runner, in a private folder of
its own, and returns the report folder's files; the driver writes them into the report folder
at once (`install_report`). So runners need no file system shared with the driver, and a task
that Ray retries (its worker was killed) still leaves exactly one complete report folder.

Ray is optional: `pip install -e '.[fleet]'` (scripts/setup.sh installs it).
"""

import contextlib
import functools
import hashlib
import os
import pathlib
import secrets
import shutil
import socket
import tempfile
import time

from autograder import grade, reports

INSTALL_HINT = "pip install -e '.[fleet]' in the course folder (bash scripts/setup.sh does it)"
GPU_ENV_VAR = "CUDA_VISIBLE_DEVICES"
# Ray titles a task's worker process `ray::<task name>`: `ray::grade:<report name>` here.
TASK_PREFIX = "grade:"
MAX_RETRIES = 3
PROGRESS_INTERVAL_S = 30
CONNECT_TIMEOUT_S = 10
LOCAL_START_ATTEMPTS = 3
# Stand-ins for slow optional imports, first on the local cluster's PYTHONPATH (see the folder).
QUIET_IMPORTS_DIR = "ray_quiet_imports"
DEFAULT_RAY_PORT = 6379
RAY_CLIENT_SCHEME = "ray://"
TEMPORARY_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
TOKEN_BYTES = 4
JOB_FOLDER_PREFIX = "cgf-"
JOB_FOLDER_DIGEST_CHARS = 10
NOTEBOOK_SUFFIX = ".ipynb"
MAX_ERROR_CHARS = 2000


class FleetError(RuntimeError):
    """The fleet cannot grade: Ray missing, cluster unreachable, or no node with the resources asked for."""


def import_ray():
    """The `ray` module.

    Raises:
        FleetError: when Ray is not installed, saying how to install it.
    """
    try:
        import ray
    except ImportError as error:
        raise FleetError(
            f"--engine ray needs the Ray package, which is not installed here ({error}). Install it with "
            f"{INSTALL_HINT}, or grade with --engine local (the default)."
        ) from None
    return ray


# ------------------------------------------------------------------------------- the cluster


def _host_port(address):
    """(host, port) of a Ray address, or None for "auto"."""
    if address == "auto":
        return None
    rest = address[len(RAY_CLIENT_SCHEME):] if address.startswith(RAY_CLIENT_SCHEME) else address
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, DEFAULT_RAY_PORT
    if not port.isdigit():
        raise FleetError(f"Invalid Ray address: received {address!r}; expected HOST:PORT (e.g. 10.0.0.5:6379), "
                         f"ray://HOST:PORT or auto.")
    return host, int(port)


def check_reachable(address, timeout_s=CONNECT_TIMEOUT_S):
    """Fails fast when nothing listens at a Ray address (ray.init itself would wait for minutes).

    Raises:
        FleetError: for an invalid or unreachable address.
    """
    host_port = _host_port(address)
    if host_port is None:
        return
    try:
        with socket.create_connection(host_port, timeout=timeout_s):
            pass
    except OSError as error:
        raise FleetError(
            f"Cannot reach the Ray cluster at {address!r} ({host_port[0]}:{host_port[1]}: {error}). Start its "
            f"head with `ray start --head` and pass the address it prints (HOST:{DEFAULT_RAY_PORT}), or leave "
            f"--address out to grade on a local cluster."
        ) from None


def connect(ray, address=None, num_cpus=None, num_gpus=None):
    """Joins the cluster at `address`, or starts a local one; an existing Ray session is used as it is.

    Args:
        ray: the ray module.
        address: a Ray address (HOST:PORT, ray://HOST:PORT, auto), or None for a local cluster.
        num_cpus, num_gpus: the local cluster's resources (None: what Ray finds on this machine).

    Returns:
        True when this call connected (the caller shuts Ray down), False for an existing session.

    Raises:
        FleetError: when the cluster cannot be reached or a local one cannot start.
    """
    if address:
        check_reachable(address)
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError or plain Exception
            raise FleetError(f"Cannot join the Ray cluster at {address!r}: {type(error).__name__}: {error}") from None
        return True
    _quiet_slow_optional_imports()
    problem = None
    for _ in range(LOCAL_START_ATTEMPTS):  # a busy machine can miss Ray's start-up deadlines once
        try:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
            return True
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
            ray.shutdown()
    raise FleetError(f"Could not start a local Ray cluster ({LOCAL_START_ATTEMPTS} attempts; last: {problem}). "
                     f"Its logs are in /tmp/ray/session_latest/logs.")


def _quiet_slow_optional_imports():
    """Leaves jsonschema's slow optional import out of the local cluster's processes (they inherit PYTHONPATH)."""
    folder = pathlib.Path(__file__).resolve().parent / QUIET_IMPORTS_DIR
    if folder.is_dir():
        entries = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        if str(folder) not in entries:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *entries])


def _node_offers(ray):
    return [(node.get("NodeManagerAddress", "?"), node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
            for node in ray.nodes() if node.get("Alive")]


def check_resources(ray, cpus_per_job, gpus_per_job):
    """Makes sure at least one live node can run one job, so that no task waits forever.

    Raises:
        FleetError: naming the request and what each node offers.
    """
    offers = _node_offers(ray)
    if any(cpus >= cpus_per_job and gpus >= gpus_per_job for _, cpus, gpus in offers):
        return
    total = ray.cluster_resources()
    nodes = "; ".join(f"{host}: {cpus:g} CPU, {gpus:g} GPU" for host, cpus, gpus in offers) or "none alive"
    raise FleetError(
        f"No node of the Ray cluster can run a grading job: each asks for {cpus_per_job:g} CPU(s) and "
        f"{gpus_per_job:g} GPU(s) (--cpus-per-job, --gpus-per-job); the cluster has "
        f"{total.get('CPU', 0):g} CPU(s) and {total.get('GPU', 0):g} GPU(s) in all (nodes: {nodes}). Ask for "
        f"less, or add a runner that has enough: `ray start --address=HEAD:{DEFAULT_RAY_PORT} --num-gpus=N`."
    )


def validate_request(cpus_per_job, gpus_per_job):
    """Raises FleetError unless the per-job request is one Ray can schedule."""
    if not cpus_per_job > 0:
        raise FleetError(f"--cpus-per-job must be positive; received {cpus_per_job!r}.")
    if not gpus_per_job >= 0:
        raise FleetError(f"--gpus-per-job must be 0 or more; received {gpus_per_job!r}.")
    if gpus_per_job > 1 and gpus_per_job != int(gpus_per_job):
        raise FleetError(f"--gpus-per-job above 1 must be a whole number (Ray shares only single GPUs); "
                         f"received {gpus_per_job!r}.")


# ------------------------------------------------------------------------------- on a runner


def pack_submission(path):
    """What grading reads of a submission, as bytes, for a runner that does not see this disk.

    A notebook file travels alone; a folder travels with every .ipynb file inside it (the
    runner's `find_notebook` chooses among them as it would here), nothing else.

    Returns:
        {"name": the file or folder's name, "folder": bool, "files": {relative path: bytes}}.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        return {"name": path.name, "folder": False, "files": {"": path.read_bytes()} if path.is_file() else {}}
    files = {}
    for root, folders, names in os.walk(path):
        folders.sort()
        for file_name in sorted(names):
            full = pathlib.Path(root, file_name)
            if file_name.endswith(NOTEBOOK_SUFFIX) and full.is_file():
                files[full.relative_to(path).as_posix()] = full.read_bytes()
    return {"name": path.name, "folder": True, "files": files}


def _safe_relative(relative):
    parts = pathlib.PurePosixPath(relative).parts
    if relative.startswith("/") or ".." in parts:
        raise ValueError(f"Refusing a file path outside its folder: received {relative!r}.")
    return pathlib.Path(*parts) if parts else pathlib.Path()


def unpack_submission(packed, folder):
    """Writes a packed submission into `folder`; returns its path there (same name as on the driver)."""
    target = pathlib.Path(folder) / packed["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if not packed["folder"]:
        if "" in packed["files"]:
            target.write_bytes(packed["files"][""])
        return target
    target.mkdir()
    for relative, data in packed["files"].items():
        file = target / _safe_relative(relative)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    return target


def read_folder(folder):
    """Every regular file under `folder` (symlinks skipped), as {relative posix path: bytes}."""
    folder = pathlib.Path(folder)
    files = {}
    for root, _, names in os.walk(folder):
        for file_name in names:
            full = pathlib.Path(root, file_name)
            if not full.is_symlink() and full.is_file():
                files[full.relative_to(folder).as_posix()] = full.read_bytes()
    return files


@contextlib.contextmanager
def _environment(values):
    """Sets environment variables for the duration of a job; Ray reuses worker processes."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def job_environment(secret, gpu_ids):
    """The environment of one job on a runner: the grading secret, and the GPUs Ray assigned.

    `CUDA_VISIBLE_DEVICES` is what `execute.base_environment` passes on to the sandboxed kernel
    and probe process; a job given no GPU sees none (an empty list), whatever the node has.

    Args:
        secret: the course's grading secret (never written into a report).
        gpu_ids: `ray.get_gpu_ids()` of the task, or None to leave CUDA_VISIBLE_DEVICES alone
            (a Slurm or Kubernetes job, whose scheduler sets it).
    """
    values = {grade.SECRET_ENV_VAR: secret}
    if gpu_ids is not None:
        values[GPU_ENV_VAR] = ",".join(str(gpu) for gpu in gpu_ids)
    return _environment(values)


def _job_folder(batch_id, name):
    """A runner's private folder for one job: the same for a retry, which clears what a killed attempt left."""
    base = os.path.realpath(os.environ.get(grade.SCRATCH_ENV_VAR) or tempfile.gettempdir())
    digest = hashlib.sha256(f"{batch_id}|{name}".encode()).hexdigest()[:JOB_FOLDER_DIGEST_CHARS]
    folder = pathlib.Path(base) / f"{JOB_FOLDER_PREFIX}{digest}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # the sandbox's user must reach the scratch folders inside
    return folder


def run_job(packed, name, options, batch_id, job=grade._grade_job):
    """Grades one packed submission in a private folder; returns (report, report folder files).

    The grading scratch folders go inside the private folder too, so nothing is left behind
    on the runner, not even by an attempt that was killed (its retry clears the folder).
    """
    folder = _job_folder(batch_id, name)
    try:
        with _environment({grade.SCRATCH_ENV_VAR: str(folder)}):
            submission = unpack_submission(packed, folder / "in")
            out_dir = folder / "out"
            report = job((str(submission), name, dict(options, out_dir=str(out_dir))))
        return report, read_folder(out_dir / name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def in_job(function, secret, tracker, name, *args):
    """What each Ray task runs: `function(*args)` in the job's environment (secret, assigned GPUs)."""
    import ray

    if tracker is not None:
        tracker.started.remote(name)
    with job_environment(secret, ray.get_gpu_ids()):
        return function(*args)


def kernel_gpus(profile="fast"):
    """CUDA_VISIBLE_DEVICES as a grading kernel started here now would get it (None: unset)."""
    with tempfile.TemporaryDirectory() as work_dir:
        return grade._kernel_environment(profile, None, None, work_dir).get(GPU_ENV_VAR)


class _Tracker:
    """Which jobs have started (Ray tells the driver when tasks finish, not when they start)."""

    def __init__(self):
        self._started = set()

    def started(self, name):
        self._started.add(name)

    def names(self):
        return sorted(self._started)


@functools.lru_cache(maxsize=None)
def _remote_in_job(ray):
    return ray.remote(in_job)  # one remote function: Ray ships its code to the cluster once


def submit(ray, function, args, secret, name, cpus=1, gpus=0, retries=MAX_RETRIES, tracker=None):
    """One Ray task running `in_job(function, secret, tracker, name, *args)`; returns its ObjectRef."""
    task = _remote_in_job(ray).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False, name=f"{TASK_PREFIX}{name}"
    )
    return task.remote(function, secret, tracker, name, *args)


# ------------------------------------------------------------------------------ on the driver


def _write_files(folder, files):
    # report.json last: its presence marks the submission as finished.
    for relative in sorted(files, key=lambda path: path == reports.REPORT_FILE):
        file = folder / _safe_relative(relative)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(files[relative])


def install_report(out_dir, name, files=None, report=None):
    """Puts one submission's report folder into `out_dir` at once, replacing an older one.

    The folder is written under a hidden name beside its place (`.tmp-<name>-<random>`) and
    renamed into place; an older folder is first renamed away (`.old-<name>-<random>`) and
    removed after. Readers never see a half-written report folder, and there is never more than
    one per submission (hidden folders are not reports).

    Args:
        out_dir: the batch's report folder.
        name: the submission's report folder name.
        files: {relative path: bytes} of the folder (from `run_job`), or None with `report`.
        report: a report dict to write the report files of (a submission whose job failed).

    Returns:
        The report folder's path.
    """
    out_dir = pathlib.Path(out_dir)
    token = secrets.token_hex(TOKEN_BYTES)
    temporary, final, old = (out_dir / f"{TEMPORARY_PREFIX}{name}-{token}", out_dir / name,
                             out_dir / f"{OLD_PREFIX}{name}-{token}")
    temporary.mkdir()
    try:
        if files is not None:
            _write_files(temporary, files)
        else:
            reports.write_report_files(temporary, report, None)
        if final.exists():
            os.rename(final, old)
        os.rename(temporary, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.rename(old, final)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def recover_interrupted(out_dir, say=print):
    """Tidies what an interrupted driver left in `out_dir`: partial folders go, a replaced one comes back.

    Only for a folder that one driver writes at a time (not for job arrays sharing it).
    """
    token_chars = 2 * TOKEN_BYTES + 1
    for entry in sorted(pathlib.Path(out_dir).iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith(TEMPORARY_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(OLD_PREFIX):
            name = entry.name[len(OLD_PREFIX):-token_chars]
            if name and not (entry.parent / name).exists():
                os.rename(entry, entry.parent / name)
                say(f"Restored {name}'s previous report folder (an interrupted batch was replacing it).")
            else:
                shutil.rmtree(entry, ignore_errors=True)


class _Progress:
    """The batch's progress lines: each finished job, and a status line while none finishes."""

    def __init__(self, total, say):
        self.total, self.say, self.started = total, say, time.time()
        self.done, self.failed, self.running = 0, 0, 0

    def counts(self):
        queued = self.total - self.done - self.running
        return (f"running {self.running}, queued {queued}, failed {self.failed}, "
                f"{time.time() - self.started:.0f} s elapsed")

    def finished(self, report, note=""):
        self.done += 1
        self.failed += report["status"] == "grader error"
        self.say(f"[{self.done}/{self.total}] {report['submission']}: {report['score']:g}/{report['max_score']:g} "
                 f"({note or report['status']}) | {self.counts()}")

    def waiting(self):
        self.say(f"[{self.done}/{self.total}] waiting | {self.counts()}")


def _job_options(options, remote):
    """The options each job gets: paths made absolute; the data folder a local cluster's runners share."""
    options = {key: value for key, value in options.items() if key not in ("resume", "out_dir")}
    data_dir = options.get("data_dir") or (None if remote else os.environ.get("COURSE_DATA_DIR"))
    options["data_dir"] = os.path.realpath(data_dir) if data_dir else None
    return options


def _collect(ray, pending, out_dir, options, progress, request, tracker, version):
    """Waits for the submitted jobs, installing each report as it arrives. Returns {index: report}."""
    results, finished_names, versions = {}, set(), set()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_INTERVAL_S)
        progress.running = len(set(ray.get(tracker.names.remote())) - finished_names) if tracker else 0
        if not ready:
            check_resources(ray, *request)  # the nodes that could run the jobs may have gone
            progress.waiting()
            continue
        index, name = pending.pop(ready[0])
        try:
            report, files = ray.get(ready[0])
            install_report(out_dir, name, files=files)
        except ray.exceptions.RayError as error:  # the worker died more often than retries allow
            report = grade.grader_error_report(name, options.get("lab"), f"the Ray task failed: {str(error)[:MAX_ERROR_CHARS]}")
            install_report(out_dir, name, report=report)
        finished_names.add(name)
        progress.running = max(0, progress.running - 1)
        results[index] = report
        progress.finished(report)
        if report.get("status") == "graded" and report.get("course_version") != version:
            versions.add(report.get("course_version"))
    if versions:
        progress.say(f"Warning: runners graded with course version(s) {', '.join(sorted(map(str, versions)))}, this "
                     f"driver has {version}; install the same course commit on every runner.")
    return results


def grade_fleet(submissions, out_dir, address=None, cpus_per_job=1, gpus_per_job=0, progress=print,
                max_retries=MAX_RETRIES, local_cpus=None, local_gpus=None, **options):
    """Grades many submissions on a Ray cluster (one task each) and writes grades.csv.

    Args:
        submissions: notebook files or submission folders (on the driver's disk).
        out_dir: the report folder (one sub-folder per submission), on the driver's disk.
        address: a Ray cluster to join (HOST:PORT, ray://HOST:PORT, auto); None starts a local
            cluster with `local_cpus` CPUs and `local_gpus` GPUs (None: what Ray finds).
        cpus_per_job, gpus_per_job: Ray resources of each job (fractional GPUs share one GPU).
        progress: called with each progress line.
        max_retries: how often Ray reruns a job whose worker died.
        **options: `grade_submission` options (lab, profile, timeout_s, memory_limit_mb,
            data_dir, resume; keep_work is refused: scratch folders stay on the runners).

    Returns:
        The list of reports, in the order of `submissions`.

    Raises:
        FleetError: Ray missing, cluster unreachable, or no node with the resources asked for.
        GraderSetupError: no grading secret on the driver.
    """
    ray = import_ray()
    validate_request(cpus_per_job, gpus_per_job)
    if address:
        check_reachable(address)  # before anything else: fail fast
    if options.pop("keep_work", False):
        raise FleetError("--keep-work is not available with --engine ray (scratch folders are on the runners); "
                         "grade the submission again with --engine local --keep-work.")
    secret = grade.grading_secret()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recover_interrupted(out_dir, progress)
    resume = options.get("resume", False)
    # A CPU job trains with the thread count the thresholds were measured with (grade.CPU_KERNEL_THREADS),
    # so that its grade matches a local one; a GPU job uses the CPUs it asked for.
    options.setdefault("kernel_threads", max(1, int(cpus_per_job)) if gpus_per_job else grade.CPU_KERNEL_THREADS)
    job_options = _job_options(options, remote=address is not None)
    version = grade.course_version()
    names = grade._unique_names(submissions)
    status = _Progress(len(names), progress)
    results, todo = {}, []
    for index, (submission, name) in enumerate(zip(submissions, names)):
        previous = resume and grade.finished_report(submission, out_dir / name, options.get("lab"),
                                                    options.get("profile", "fast"), version)
        if previous:
            results[index] = previous
            status.finished(previous, "resumed: graded before, unchanged")
        else:
            todo.append((index, str(submission), name))
    connected = connect(ray, address, local_cpus, local_gpus) if todo else False
    try:
        if todo:
            check_resources(ray, cpus_per_job, gpus_per_job)
            tracker = ray.remote(_Tracker).options(num_cpus=0).remote()
            batch_id = secrets.token_hex(8)
            pending = {}
            try:
                for index, submission, name in todo:
                    args = (pack_submission(submission), name, job_options, batch_id)
                    ref = submit(ray, run_job, args, secret, name, cpus_per_job, gpus_per_job, max_retries, tracker)
                    pending[ref] = (index, name)
                results.update(_collect(ray, pending, out_dir, job_options, status,
                                        (cpus_per_job, gpus_per_job), tracker, version))
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
    finally:
        if connected:
            ray.shutdown()
    reports.write_class_csv(out_dir)
    return [results[index] for index in range(len(names))]
