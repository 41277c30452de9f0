"""Where Keras' extra step time goes: torch.profiler and cProfile on one round per side.

`profile_case` trains one warm round of the Keras model and one of its torch twin
under `torch.profiler`, and one more Keras round under `cProfile`, and returns:

- per side: wall time per step, time per step inside aten operators (the tensor
  work), the rest (Python: framework code, the loop), and operator calls per step;
- the aten operators whose time per step grows most from torch to Keras;
- the Python functions of the Keras round with the most own time (cProfile).
"""

import cProfile
import io
import pstats
import time

from torch import profiler

from benchmarks.step_time import KerasRunner, TorchRunner, make_data

TOP_OPERATORS = 12
TOP_FUNCTIONS = 12
MICROSECONDS_PER_MS = 1000.0


def _operator_table(runner, steps):
    """Runs one round under torch.profiler: `({op: (calls, self_ms)} per step, wall ms/step)`."""
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as recorder:
        start = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - start
    table = {}
    for event in recorder.key_averages():
        if not event.key.startswith("aten::"):
            continue
        table[event.key] = (
            event.count / steps,
            event.self_cpu_time_total / MICROSECONDS_PER_MS / steps,
        )
    return table, 1000.0 * wall / steps


def _side_summary(table, wall_ms):
    operator_ms = sum(self_ms for _, self_ms in table.values())
    return {
        "wall_ms": wall_ms,
        "operator_ms": operator_ms,
        "other_ms": wall_ms - operator_ms,
        "operator_calls": sum(calls for calls, _ in table.values()),
    }


def _python_hotspots(runner, limit=TOP_FUNCTIONS):
    """The functions with the most own time in one Keras round (cProfile)."""
    recorder = cProfile.Profile()
    recorder.enable()
    runner.run()
    recorder.disable()
    stream = io.StringIO()
    statistics = pstats.Stats(recorder, stream=stream)
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in statistics.stats.items():
        rows.append((own, calls, cumulative, f"{_short_path(filename)}:{line}({function})"))
    rows.sort(reverse=True)
    return [
        {"function": name, "calls": calls, "own_s": own, "cumulative_s": cumulative}
        for own, calls, cumulative, name in rows[:limit]
    ]


def _short_path(filename):
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def profile_case(case, how="fit", steps=None):
    """Profiles one warm round of Keras (`how`) and of torch on `case`.

    Returns:
        A dict with `keras` and `torch` summaries (`wall_ms`, `operator_ms`,
        `other_ms`, `operator_calls`, all per step), `operators` (the aten operators
        with the largest extra time per step in Keras: name, calls and ms per step on
        each side) and `python` (cProfile hot spots of a Keras round).
    """
    steps = steps or case.steps
    images, labels = make_data(case, steps * case.batch_size)
    keras_runner = KerasRunner(case, how, images, labels)
    torch_runner = TorchRunner(case, images, labels)
    for runner in (keras_runner, torch_runner):
        runner.run()  # warm-up
    keras_table, keras_wall = _operator_table(keras_runner, steps)
    torch_table, torch_wall = _operator_table(torch_runner, steps)
    operators = []
    for name in set(keras_table) | set(torch_table):
        keras_calls, keras_ms = keras_table.get(name, (0.0, 0.0))
        torch_calls, torch_ms = torch_table.get(name, (0.0, 0.0))
        operators.append(
            {
                "operator": name,
                "keras_calls": keras_calls,
                "torch_calls": torch_calls,
                "keras_ms": keras_ms,
                "torch_ms": torch_ms,
                "extra_ms": keras_ms - torch_ms,
            }
        )
    operators.sort(key=lambda row: row["extra_ms"], reverse=True)
    return {
        "case": case.name,
        "how": how,
        "steps": steps,
        "keras": _side_summary(keras_table, keras_wall),
        "torch": _side_summary(torch_table, torch_wall),
        "operators": operators[:TOP_OPERATORS],
        "python": _python_hotspots(keras_runner),
    }


def format_profile(report):
    """Formats a `profile_case` report as Markdown."""
    keras_side, torch_side = report["keras"], report["torch"]
    lines = [
        f"#### {report['case']} (keras {report['how']}, {report['steps']} steps, per step)",
        "",
        "| side | wall ms | in aten ops ms | outside ops ms | op calls |",
        "|---|---|---|---|---|",
    ]
    for name, side in (("keras", keras_side), ("torch", torch_side)):
        lines.append(
            f"| {name} | {side['wall_ms']:.1f} | {side['operator_ms']:.1f} "
            f"| {side['other_ms']:.1f} | {side['operator_calls']:.0f} |"
        )
    lines += [
        "",
        "| aten operator | keras calls | torch calls | keras ms | torch ms | extra ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["operators"]:
        lines.append(
            f"| {row['operator']} | {row['keras_calls']:.0f} | {row['torch_calls']:.0f} "
            f"| {row['keras_ms']:.2f} | {row['torch_ms']:.2f} | {row['extra_ms']:+.2f} |"
        )
    lines += [
        "",
        "| python function (keras round, cProfile) | calls | own s | cumulative s |",
        "|---|---|---|---|",
    ]
    for row in report["python"]:
        lines.append(
            f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} "
            f"| {row['cumulative_s']:.3f} |"
        )
    return "\n".join(lines)
