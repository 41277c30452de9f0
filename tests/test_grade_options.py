"""Grading options that do not need a kernel: CPU threads per parallel kernel."""

from autograder import grade


def test_parallel_kernels_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grade.os, "cpu_count", lambda: 8)
    assert grade.kernel_threads_for(1) is None
    assert grade.kernel_threads_for(2) == 4
    assert grade.kernel_threads_for(16) == 1


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert grade.kernel_threads_for(4) is None
    environment = grade._kernel_environment("fast", None, None)
    assert environment["OMP_NUM_THREADS"] == "3"


def test_kernel_environment_sets_both_thread_variables(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    environment = grade._kernel_environment("fast", "/data", 2)
    assert environment["OMP_NUM_THREADS"] == environment["MKL_NUM_THREADS"] == "2"
    assert environment["COURSE_DATA_DIR"] == "/data"
