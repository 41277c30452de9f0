"""The Ray engine (autograder/fleet.py) on a real local Ray cluster, and the manifest entry point.

One local cluster (2 CPUs, 2 logical GPUs) serves the whole module. A small batch with hostile
cases is graded once by the local pool and once through Ray, with one Ray worker killed by its
pid in the middle of a job; the tests compare the two and look at the report folder. Ray is
installed by scripts/setup.sh: without it these tests fail, they are not skipped.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import nbformat
import pytest

from autograder import cli, fleet
from autograder.grade import grade_batch, grading_secret
from autograder.reports import CLASS_CSV, REPORT_FILE

TESTS_DIR = pathlib.Path(__file__).resolve().parent
CORPUS_DIR = TESTS_DIR / "hostile_corpus"
LIMITS = json.loads((CORPUS_DIR / "limits.json").read_text())
# Hostile (a secret hunt, a kernel that kills itself, broken JSON), a folder with junk beside its
# notebook, and a valid but wrong notebook that prints the GPUs its kernel sees.
CASES = ["read_secret_and_environment", "os_exit", "invalid_json", "junk_folder"]
GPU_VIEW_CASE = "gpu_view"
GPU_VIEW_PATTERN = re.compile(r"GPU-VIEW: (None|'[^']*')")
KILLED_CASE = GPU_VIEW_CASE
LOGICAL_GPUS = 2
KILL_AFTER_S = 4
# The killed job's notebook sleeps this long: on an idle machine the whole job took ~5 s, so it
# ended before the kill; under the corpus' 45-s notebook limit even on a loaded machine.
KILLED_JOB_MIN_S = 12
FIND_WORKER_TIMEOUT_S = 180
RENDEZVOUS_TIMEOUT_S = 60
OPTIONS = {"lab": "lab3", "profile": "fast", "timeout_s": LIMITS["timeout_s"],
           "memory_limit_mb": LIMITS["memory_limit_mb"]}

pytestmark = pytest.mark.timeout(900)


def _submission_of(case, destination):
    """A corpus case's submission in `destination`, named after the case."""
    source = CORPUS_DIR / case
    if (source / "submission").is_dir():
        return pathlib.Path(shutil.copytree(source / "submission", destination / case))
    target = destination / f"{case}.ipynb"
    shutil.copy(source / "lab3.ipynb", target)
    return target


def _gpu_view_submission(destination):
    """The flipped-KL notebook (valid, wrong) with a cell printing the kernel's CUDA_VISIBLE_DEVICES."""
    notebook = nbformat.read(CORPUS_DIR / "honest_flipped_kl" / "lab3.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(
        'import os\nimport time\n'
        f'time.sleep({KILLED_JOB_MIN_S})  # long enough to be killed mid-job on an idle machine too\n'
        'print("GPU-VIEW:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))'))
    target = destination / f"{GPU_VIEW_CASE}.ipynb"
    nbformat.write(notebook, target)
    return target


def _grades(report):
    """What must not depend on the engine: status, score and each check's points."""
    return (report["status"], report["score"], report["max_score"],
            [(check["name"], check["points"], check["passed"]) for check in report["checks"]])


def _worker_pids(task_name):
    """Pids of the processes Ray titled `ray::<task_name>` (the worker running that task)."""
    title = f"ray::{task_name}".encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.split(b"\0")[0].strip() == title:
                pids.append(int(entry.name))
    return pids


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = fleet.import_ray()
    assert fleet.connect(ray, num_cpus=2, num_gpus=LOGICAL_GPUS)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet-submissions")
    submissions = [_submission_of(case, folder) for case in CASES] + [_gpu_view_submission(folder)]
    return {"cases": CASES + [GPU_VIEW_CASE], "submissions": submissions}


@pytest.fixture(scope="module")
def local_grades(batch, tmp_path_factory):
    reports = grade_batch(batch["submissions"], tmp_path_factory.mktemp("local-reports"), workers=2,
                          progress=lambda line: None, **OPTIONS)
    return dict(zip(batch["cases"], reports))


@pytest.fixture(scope="module")
def ray_graded(ray_cluster, batch, tmp_path_factory):
    """The batch through Ray (1 logical GPU per job); the worker grading KILLED_CASE is killed mid-job."""
    out_dir = tmp_path_factory.mktemp("ray-reports")
    progress, outcome = [], {}

    def run():
        try:
            outcome["reports"] = fleet.grade_fleet(batch["submissions"], out_dir, gpus_per_job=1,
                                                   progress=progress.append, **OPTIONS)
        except BaseException as error:  # reported by the tests, not lost in the thread
            outcome["error"] = error

    driver = threading.Thread(target=run)
    driver.start()
    killed, deadline = None, time.time() + FIND_WORKER_TIMEOUT_S
    while killed is None and driver.is_alive() and time.time() < deadline:
        pids = _worker_pids(f"{fleet.TASK_PREFIX}{KILLED_CASE}")
        if pids:
            time.sleep(KILL_AFTER_S)  # well inside the job: the kernel runs the notebook
            if pids[0] in _worker_pids(f"{fleet.TASK_PREFIX}{KILLED_CASE}"):
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
        time.sleep(0.2)
    driver.join()
    if "error" in outcome:
        raise outcome["error"]
    return {"reports": dict(zip(batch["cases"], outcome["reports"])), "out_dir": out_dir,
            "progress": progress, "killed": killed}


@pytest.mark.slow
def test_ray_grades_equal_the_local_pool(ray_cluster, local_grades, ray_graded):  # Ray starts first, on a quiet machine
    for case, local in local_grades.items():
        assert _grades(ray_graded["reports"][case]) == _grades(local), case
    statuses = {case: report["status"] for case, report in local_grades.items()}
    assert statuses["invalid_json"] == "not graded" and statuses["os_exit"] == "graded"


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_leaves_exactly_one_report(ray_graded, batch):
    assert ray_graded["killed"] is not None, "no worker running the job was found to kill"
    assert not pathlib.Path(f"/proc/{ray_graded['killed']}").exists()
    out_dir = ray_graded["out_dir"]
    names = {report["submission"] for report in ray_graded["reports"].values()}
    assert sorted(entry.name for entry in out_dir.iterdir()) == sorted(names | {CLASS_CSV})
    report = json.loads((out_dir / KILLED_CASE / REPORT_FILE).read_text())
    assert report["status"] == "graded" and report["checks"], report["summary"]
    assert {"feedback.html", "feedback.ipynb", "results.json"} <= {path.name for path in (out_dir / KILLED_CASE).iterdir()}
    rows = (out_dir / CLASS_CSV).read_text().strip().splitlines()
    assert len(rows) == len(batch["cases"]) + 1
    assert ray_graded["progress"][-1].startswith(f"[{len(batch['cases'])}/{len(batch['cases'])}]")
    assert "running" in ray_graded["progress"][-1] and "failed 0" in ray_graded["progress"][-1]


@pytest.mark.slow
def test_the_sandboxed_kernel_sees_the_gpu_ray_assigned_and_no_secret(ray_graded):
    feedback = (ray_graded["out_dir"] / GPU_VIEW_CASE / "feedback.ipynb").read_text()
    assert GPU_VIEW_PATTERN.findall(feedback) in (["'0'"], ["'1'"])
    secret = grading_secret()
    for folder in ray_graded["out_dir"].iterdir():
        if folder.is_dir():
            for file in folder.iterdir():
                assert secret not in file.read_text(errors="replace"), file


@pytest.mark.slow
def test_resume_skips_finished_work_and_tidies_an_interrupted_batch(ray_graded, batch):
    out_dir = ray_graded["out_dir"]
    graded = [case for case, report in ray_graded["reports"].items() if report["status"] == "graded"]
    # An interrupted driver: a half-written folder, and a folder renamed away mid-replacement.
    (out_dir / f"{fleet.TEMPORARY_PREFIX}os_exit-0badc0de").mkdir()
    os.rename(out_dir / graded[0], out_dir / f"{fleet.OLD_PREFIX}{graded[0]}-0badc0de")
    stamps = {case: (out_dir / case / REPORT_FILE).stat().st_mtime_ns for case in graded[1:]}
    progress = []
    second = fleet.grade_fleet(batch["submissions"], out_dir, gpus_per_job=1, progress=progress.append,
                               resume=True, **OPTIONS)
    assert [_grades(report) for report in second] == [_grades(ray_graded["reports"][case]) for case in batch["cases"]]
    for case, stamp in stamps.items():
        assert (out_dir / case / REPORT_FILE).stat().st_mtime_ns == stamp, f"{case} was regraded"
    assert sum("resumed" in line for line in progress) == len(graded)
    assert not [entry.name for entry in out_dir.iterdir() if entry.name.startswith(".")]


def _kernel_gpus_side_by_side(rendezvous, count):
    """A job that waits until `count` jobs run at once, then says what its kernel would see."""
    pathlib.Path(rendezvous, str(os.getpid())).touch()
    deadline = time.time() + RENDEZVOUS_TIMEOUT_S
    while len(os.listdir(rendezvous)) < count and time.time() < deadline:
        time.sleep(0.05)
    return fleet.kernel_gpus(), len(os.listdir(rendezvous))


def _views(ray, tmp_path, label, count, gpus):
    rendezvous = tmp_path / label
    rendezvous.mkdir()
    secret = grading_secret()
    refs = [fleet.submit(ray, _kernel_gpus_side_by_side, (str(rendezvous), count), secret, f"{label}-{index}",
                         gpus=gpus, cpus=0.5) for index in range(count)]
    views = ray.get(refs)
    assert all(met == count for _, met in views), f"the {label} jobs did not run side by side"
    return [view for view, _ in views]


def test_jobs_get_one_logical_gpu_each(ray_cluster, tmp_path):
    ray = ray_cluster
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    assert sorted(_views(ray, tmp_path, "whole", LOGICAL_GPUS, 1)) == ["0", "1"]
    halves = _views(ray, tmp_path, "half", 2 * LOGICAL_GPUS, 0.5)  # two jobs share each GPU
    assert sorted(halves) == ["0", "0", "1", "1"]
    assert _views(ray, tmp_path, "none", 1, 0) == [""]  # asked for none: sees none


def test_a_request_no_node_can_meet_fails_at_once(ray_cluster, tmp_path):
    notebook = _submission_of("invalid_json", tmp_path)
    for request, text in (({"gpus_per_job": LOGICAL_GPUS + 1}, "3 GPU(s)"), ({"cpus_per_job": 64}, "64 CPU(s)")):
        started = time.time()
        with pytest.raises(fleet.FleetError, match="No node of the Ray cluster") as error:
            fleet.grade_fleet([notebook], tmp_path / "out", progress=lambda line: None, **request, **OPTIONS)
        assert text in str(error.value) and "2 GPU(s) in all" in str(error.value)
        assert time.time() - started < 30
    with pytest.raises(fleet.FleetError, match="whole number"):
        fleet.grade_fleet([notebook], tmp_path / "out", gpus_per_job=1.5, **OPTIONS)


def test_an_unreachable_cluster_is_a_clear_error(tmp_path, capsys):
    notebook = _submission_of("invalid_json", tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    status = cli.main(["grade", str(notebook), "--out", str(tmp_path / "out"), "--engine", "ray",
                       "--address", address])
    error = capsys.readouterr().err
    assert status == 2 and f"Cannot reach the Ray cluster at {address!r}" in error and "ray start --head" in error
    started = time.time()  # ray.init itself would wait for minutes
    with pytest.raises(fleet.FleetError, match="Cannot reach"):
        fleet.grade_fleet([notebook], tmp_path / "out", address=address, **OPTIONS)
    assert time.time() - started < 30
    with pytest.raises(fleet.FleetError, match="expected HOST:PORT"):
        fleet.check_reachable("head:port")


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    status = cli.main(["grade", "x.ipynb", "--out", str(tmp_path), "--engine", "ray"])
    error = capsys.readouterr().err
    assert status == 2 and "needs the Ray package" in error and ".[fleet]" in error


def test_manifest_index_grades_one_entry_from_another_directory(tmp_path):
    submissions = tmp_path / "class"
    submissions.mkdir()
    _submission_of("invalid_json", submissions)
    _submission_of("empty_file", submissions)
    manifest = submissions / "manifest.txt"
    manifest.write_text("# the class\nempty_file.ipynb\n\ninvalid_json.ipynb\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = dict(os.environ, SLURM_ARRAY_TASK_ID="1")
    command = [sys.executable, "-m", "autograder", "grade", "--manifest", str(manifest), "--out", "reports"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Entry 1" in result.stdout and "python -m autograder csv reports" in result.stdout
    report = json.loads((elsewhere / "reports" / "invalid_json" / REPORT_FILE).read_text())
    assert report["status"] == "not graded" and "not valid JSON" in report["summary"]
    assert sorted(entry.name for entry in (elsewhere / "reports").iterdir()) == ["invalid_json"]
    rebuilt = subprocess.run([sys.executable, "-m", "autograder", "csv", "reports"], capture_output=True,
                             text=True, cwd=elsewhere, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (elsewhere / "reports" / CLASS_CSV).read_text().count("invalid_json") == 1


def test_manifest_mistakes_are_clear_errors(tmp_path, capsys):
    notebook = _submission_of("invalid_json", tmp_path)
    listing = tmp_path / "class.json"
    listing.write_text(json.dumps([str(notebook)]))
    cases = [
        (listing, ["--index", "1"], "Index out of range: received 1 from --index; the manifest lists 1"),
        (listing, ["--index", "one"], "must be an integer; received 'one'"),
        (listing, [], "No index"),
        (tmp_path / "missing.txt", ["--index", "0"], "Cannot read the manifest"),
    ]
    (tmp_path / "bad.json").write_text('["a.ipynb", 3]')
    cases.append((tmp_path / "bad.json", ["--index", "0"], "received entries such as [3]"))
    environment = {name: os.environ.pop(name) for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
                   if name in os.environ}
    try:
        for manifest, extra, text in cases:
            status = cli.main(["grade", "--manifest", str(manifest), "--out", str(tmp_path / "out"), *extra])
            assert status == 2 and text in capsys.readouterr().err, (manifest, extra)
    finally:
        os.environ.update(environment)
    status = cli.main(["grade", str(notebook), "--manifest", str(listing), "--out", str(tmp_path / "out")])
    assert status == 2 and "not both" in capsys.readouterr().err


def test_install_report_replaces_a_folder_whole(tmp_path):
    first = fleet.install_report(tmp_path, "alice", files={REPORT_FILE: b'{"v": 1}', "old.txt": b"old"})
    second = fleet.install_report(tmp_path, "alice", files={REPORT_FILE: b'{"v": 2}', "sub/new.txt": b"new"})
    assert first == second == tmp_path / "alice"
    assert sorted(path.relative_to(second).as_posix() for path in second.rglob("*") if path.is_file()) == \
        [REPORT_FILE, "sub/new.txt"]
    assert [entry.name for entry in tmp_path.iterdir()] == ["alice"]
    with pytest.raises(ValueError, match="outside its folder"):
        fleet.install_report(tmp_path, "bob", files={"../escape": b"x"})
    assert [entry.name for entry in tmp_path.iterdir()] == ["alice"] and not (tmp_path.parent / "escape").exists()
