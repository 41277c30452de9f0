"""`python -m benchmarks`: step-time ratios Keras/torch, profiles, grading cost.

Examples:

    python -m benchmarks                                   # all models, Keras fit()
    python -m benchmarks --models lab3_dense_vae --how fit,jit
    python -m benchmarks --profile lab1_cnn
    python -m benchmarks --no-step-time --grading-dir /tmp/e2e
    python -m benchmarks --no-step-time --grade lab1,lab3 --grading-dir /tmp/grading
    python -m benchmarks --no-step-time --second-evaluator samples_a.npy samples_b.npz

Prints Markdown (and writes it to `--out`).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys

THREADS_DEFAULT = 1
TARGET_RATIO = 1.10


def _parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all",
                        help="comma-separated case names, or 'all' (see --list)")
    parser.add_argument("--how", default="fit",
                        help="comma-separated Keras variants: fit, fit_dataloader, train_function, jit")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--precision", default="float32",
                        help="comma-separated: float32, mixed_bfloat16 (Keras' dtype policy; torch.autocast bf16)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per round (default: each model's own)")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT,
                        help="torch threads, for both sides")
    parser.add_argument("--profile", default="",
                        help="comma-separated case names to profile (torch.profiler + cProfile)")
    parser.add_argument("--profile-how", default="fit", help="Keras variant to profile")
    parser.add_argument("--no-step-time", action="store_true", help="skip the step-time table")
    parser.add_argument("--grade", default="",
                        help="comma-separated labs whose solutions to grade first (slow: minutes each)")
    parser.add_argument("--grading-dir", default=None,
                        help="tabulate the report.json files under this folder "
                             "(with --grade: where the reports go)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="raise glibc's mmap/trim thresholds first (benchmarks/allocator.py)")
    parser.add_argument("--lab3-likelihood", default="",
                        help="comma-separated seeds: train lab 3's VAE and measure its test "
                             "negative ELBO and importance-sampled NLL")
    parser.add_argument("--second-evaluator", nargs="+", default=[], metavar="SAMPLES",
                        help="CIFAR-10 sample files (.npy, or the first array of a .npz) to measure in the "
                             "shipped ResNet18's features (benchmarks/second_evaluator.py)")
    parser.add_argument("--out", default=None, help="also write the Markdown here")
    parser.add_argument("--json", default=None, help="write the raw results as JSON here")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    arguments = parser.parse_args(argv)
    if arguments.second_evaluator:
        from benchmarks import second_evaluator

        # Loaded before any measurement: a wrong file should not wait for the step-time tables.
        arguments.sample_sets = {}
        for path in arguments.second_evaluator:
            try:
                arguments.sample_sets[path] = second_evaluator.load_samples(path)
            except (OSError, ValueError) as error:
                parser.error(f"--second-evaluator: {error}")
    return arguments


def _load_average():
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def _header(threads):
    import course_lib  # before keras: it selects the torch backend

    import keras
    import numpy
    import torch

    info = course_lib.device_info()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- command: `python -m benchmarks {' '.join(sys.argv[1:])}`",
            f"- date: {now}",
            f"- device: {info['device']} ({platform.processor() or platform.machine()}), "
            f"torch threads = {threads} (both sides), interop threads = 1",
            f"- versions: python {info['python']}, keras {keras.__version__} "
            f"({keras.backend.backend()} backend), torch {torch.__version__}, numpy {numpy.__version__}",
            f"- load average at start: {_load_average()}",
        ]
    )


def _split(text):
    return [item for item in text.split(",") if item]


def _step_time_section(arguments, results):
    from benchmarks import step_time

    names = list(step_time.CASES) if arguments.models == "all" else _split(arguments.models)
    unknown = [name for name in names if name not in step_time.CASES]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}. Expected some of {list(step_time.CASES)}.")
    measured = []
    for name in names:
        for how in _split(arguments.how):
            for precision in _split(arguments.precision):
                print(f"measuring {name} ({how}, {precision}) ...", file=sys.stderr, flush=True)
                result = step_time.measure_case(
                    step_time.CASES[name], how, rounds=arguments.rounds, steps=arguments.steps,
                    precision=precision,
                )
                measured.append(result)
    results["step_time"] = measured
    return (
        "### Training step time, Keras / plain PyTorch\n\n"
        + step_time.format_table(measured, TARGET_RATIO)
        + f"\n\nLoad average after: {_load_average()}"
    )


def _profile_section(arguments, results):
    from benchmarks import profiling, step_time

    sections = []
    results["profiles"] = []
    for name in _split(arguments.profile):
        print(f"profiling {name} ...", file=sys.stderr, flush=True)
        report = profiling.profile_case(step_time.CASES[name], arguments.profile_how)
        results["profiles"].append(report)
        sections.append(profiling.format_profile(report))
    return "### Profiles\n\n" + "\n\n".join(sections)


def _grading_section(arguments, results):
    from benchmarks import grading_cost

    labs = _split(arguments.grade)
    if labs:
        if arguments.grading_dir is None:
            raise SystemExit("--grade needs --grading-dir (where the reports go).")
        codes = grading_cost.grade_solutions(labs, arguments.grading_dir)
        results["grading_return_codes"] = codes
    rows = grading_cost.collect_reports(arguments.grading_dir)
    results["grading"] = rows
    return (
        f"### Grading cost (reports under {arguments.grading_dir})\n\n"
        + grading_cost.format_grading_table(rows)
    )


def _second_evaluator_section(arguments, results):
    from benchmarks import second_evaluator

    distances = second_evaluator.frechet_distances(arguments.sample_sets)
    results["second_evaluator"] = distances
    return "### CIFAR-10 samples in a second evaluator\n\n" + second_evaluator.format_table(distances)


def _likelihood_section(arguments, results):
    from benchmarks.likelihood import format_likelihood_table, lab3_likelihood

    rows = [lab3_likelihood(int(seed)) for seed in _split(arguments.lab3_likelihood)]
    results["lab3_likelihood"] = rows
    return "### Lab 3 test likelihood\n\n" + format_likelihood_table(rows)


def main(argv=None):
    arguments = _parse_arguments(argv)
    import torch

    import course_lib  # noqa: F401  (torch backend before keras)

    torch.set_num_threads(arguments.threads)
    torch.set_num_interop_threads(1)
    if arguments.list:
        from benchmarks import step_time

        for case in step_time.CASES.values():
            print(f"{case.name}: {case.lab}, batch {case.batch_size}, {case.steps} steps per round")
        return 0
    results = {}
    sections = ["## Benchmark run", _header(arguments.threads)]
    if arguments.keep_freed_memory:
        from benchmarks.allocator import keep_freed_memory

        accepted = keep_freed_memory()
        results["keep_freed_memory"] = accepted
        sections.append(f"- glibc keeps freed memory (mallopt): {'yes' if accepted else 'refused'}")
    if not arguments.no_step_time:
        sections.append(_step_time_section(arguments, results))
    if arguments.profile:
        sections.append(_profile_section(arguments, results))
    if arguments.grading_dir is not None:
        sections.append(_grading_section(arguments, results))
    if arguments.lab3_likelihood:
        sections.append(_likelihood_section(arguments, results))
    if arguments.second_evaluator:
        sections.append(_second_evaluator_section(arguments, results))
    text = "\n\n".join(sections) + "\n"
    print(text)
    if arguments.out:
        pathlib.Path(arguments.out).write_text(text)
    if arguments.json:
        pathlib.Path(arguments.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
