"""Grading options that do not need a kernel: CPU threads per parallel kernel, the kernel's environment, the secret."""

from autograder import grade


def test_parallel_kernels_share_the_cores_of_a_gpu_runner(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grade.os, "cpu_count", lambda: 8)
    assert grade.kernel_threads_for(1, gpu=True) is None
    assert grade.kernel_threads_for(2, gpu=True) == 4
    assert grade.kernel_threads_for(16, gpu=True) == 1


def test_on_a_cpu_a_kernel_has_the_same_threads_alone_or_in_a_class(monkeypatch):
    # Its thread count changes what a CPU kernel trains: a grade must not depend on --workers.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grade.os, "cpu_count", lambda: 8)
    assert {grade.kernel_threads_for(workers, gpu=False) for workers in (1, 2, 3, 8, 16)} == {grade.CPU_KERNEL_THREADS}
    monkeypatch.setattr(grade, "_torch_sees_a_gpu", lambda: False)
    assert grade.kernel_threads_for(1) == grade.CPU_KERNEL_THREADS


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert grade.kernel_threads_for(4) is None
    environment = grade._kernel_environment("fast", None, None, "/tmp/w")
    assert environment["OMP_NUM_THREADS"] == "3"


def test_kernel_environment_sets_both_thread_variables(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    environment = grade._kernel_environment("fast", "/data", 2, "/tmp/w")
    assert environment["OMP_NUM_THREADS"] == environment["MKL_NUM_THREADS"] == "2"
    assert environment["COURSE_DATA_DIR"] == "/data"


def test_a_linked_tfds_folder_reaches_the_kernel_where_the_sandbox_shows_it(monkeypatch, tmp_path):
    real = tmp_path / "real tfds"
    real.mkdir()
    (tmp_path / "tfds-link").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", "tfds-link")
    environment = grade._kernel_environment("fast", None, None, "/tmp/w")
    assert environment["TFDS_DATA_DIR"] == str(real)
    assert environment["TFDS_DATA_DIR"] in grade._readable_paths(None)


ALLOWED = {"PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
           "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH", "TFDS_DATA_DIR", "KERAS_BACKEND",
           "COURSE_PROFILE", "MPLBACKEND", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "COURSE_DATA_DIR",
           "HOME", "TMPDIR", "MPLCONFIGDIR", "KERAS_HOME"}


def test_kernel_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("COURSE_GRADER_SECRET", "s" * 64)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    environment = grade._kernel_environment("fast", "/data", None, "/tmp/w")
    assert set(environment) <= ALLOWED, set(environment) - ALLOWED
    assert environment["HOME"] == "/tmp/w/home"


def test_grading_refuses_to_start_without_a_secret(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_GRADER_SECRET", raising=False)
    monkeypatch.setenv("COURSE_GRADER_SECRET_FILE", str(tmp_path / "missing"))
    try:
        grade.grading_secret()
    except grade.GraderSetupError as error:
        assert "scripts/setup.sh" in str(error) and "0 characters" in str(error)
    else:
        raise AssertionError("no error without a secret")
    (tmp_path / "short").write_text("abc\n")
    monkeypatch.setenv("COURSE_GRADER_SECRET_FILE", str(tmp_path / "short"))
    try:
        grade.grading_secret()
    except grade.GraderSetupError as error:
        assert "3 characters" in str(error)
    else:
        raise AssertionError("a 3-character secret was accepted")


def test_the_seed_depends_on_the_secret(monkeypatch):
    monkeypatch.setenv("COURSE_GRADER_SECRET", "a" * 40)
    first = grade.probe_seed("lab3", "fingerprint")
    monkeypatch.setenv("COURSE_GRADER_SECRET", "b" * 40)
    assert grade.probe_seed("lab3", "fingerprint") != first


def test_batch_overrides_change_only_the_named_submissions(monkeypatch, tmp_path):
    seen = {}

    def fake_grade(submission, name=None, **options):
        seen[name] = options["timeout_s"]
        return {"submission": name, "score": 0.0, "max_score": 1.0, "status": "graded"}

    monkeypatch.setattr(grade, "grade_submission", fake_grade)
    monkeypatch.setattr(grade.reports, "write_class_csv", lambda out_dir: None)
    submissions = [tmp_path / "a.ipynb", tmp_path / "b.ipynb"]
    grade.grade_batch(submissions, tmp_path / "out", progress=lambda line: None, timeout_s=45,
                      overrides={submissions[1]: {"timeout_s": 15}})
    assert seen == {"a": 45, "b": 15}
    try:
        grade.grade_batch(submissions, tmp_path / "out", progress=lambda line: None,
                          overrides={tmp_path / "c.ipynb": {"timeout_s": 15}})
    except ValueError as error:
        assert "c.ipynb" in str(error)
    else:
        raise AssertionError("an override of a submission outside the batch was accepted")


def test_the_export_after_a_time_out_waits_at_most_the_notebooks_limit():
    from autograder import execute

    assert execute._export_timeout("", 15) == execute.EXPORT_TIMEOUT_S
    assert execute._export_timeout("timeout", 900) == execute.EXPORT_TIMEOUT_AFTER_TIMEOUT_S == 60
    assert execute._export_timeout("timeout", 15) == 15
