# In-kernel probe runtime. The grader sends this file's text, the lab's probe module and a
# call to `_course_probe_main` as one cell after the student's notebook has run.
# It must stay self-contained: no import of the autograder package.
import json as _course_json
import os as _course_os
import time as _course_time
import traceback as _course_traceback

_COURSE_MAX_ERROR_CHARS = 1500


class ProbeError(Exception):
    """Raised by a probe when the submission lacks or breaks what the probe needs."""


def require(namespace, name, kind=None):
    """Returns `namespace[name]`, or raises ProbeError saying what is missing."""
    if name not in namespace:
        raise ProbeError(
            f"The notebook defines no `{name}`. Keep the names given in the "
            f"notebook's introduction."
        )
    value = namespace[name]
    if kind == "callable" and not callable(value):
        raise ProbeError(f"`{name}` should be callable. Received: {type(value).__name__}")
    return value


def to_numpy(value):
    """Converts a keras/torch/numpy value to a numpy array (on the CPU)."""
    import numpy

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif not isinstance(value, numpy.ndarray):
        import keras

        value = keras.ops.convert_to_numpy(value)
    return numpy.asarray(value)


def _course_describe_error(error):
    text = "".join(_course_traceback.format_exception_only(type(error), error)).strip()
    return text[-_COURSE_MAX_ERROR_CHARS:]


def _course_probe_main(namespace, probes, out_dir, seed, only=None):
    """Runs each probe, catching every failure, and writes probe.npz + probe.json."""
    import numpy

    arrays = {}
    items = {}
    for item_name, probe in probes.items():
        if only is not None and item_name not in only:
            continue
        started = _course_time.time()
        rng = numpy.random.default_rng([seed, len(items)])
        try:
            result = probe(namespace, rng) or {}
            facts = {}
            for key, value in result.items():
                if isinstance(value, (str, bool, int, float, type(None), list, dict)):
                    facts[key] = value
                else:
                    arrays[f"{item_name}/{key}"] = to_numpy(value)
            items[item_name] = {"ok": True, "facts": facts}
        except BaseException as error:  # SystemExit and KeyboardInterrupt included
            items[item_name] = {"ok": False, "error": _course_describe_error(error)}
        items[item_name]["seconds"] = round(_course_time.time() - started, 3)
    numpy.savez(_course_os.path.join(out_dir, "probe.npz"), **arrays)
    with open(_course_os.path.join(out_dir, "probe.json"), "w") as handle:
        _course_json.dump({"seed": seed, "items": items}, handle)
    return items
