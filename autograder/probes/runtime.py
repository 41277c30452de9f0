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


def module_of(value):
    """The module a function or class (or, failing that, an instance's class) was defined in."""
    module = getattr(value, "__module__", None)
    if module is None:
        module = getattr(type(value), "__module__", None)
    return str(module)


def defined_in(value):
    """The module where `value` (a function, a class or an instance) was defined."""
    if isinstance(value, type) or callable(value) and hasattr(value, "__code__"):
        return module_of(value)
    return module_of(type(value))


def referenced_names(function):
    """Global and attribute names used by `function` and by the helpers it calls.

    Helpers are the functions defined beside it (same globals), followed recursively.
    Names bound to course_lib objects are reported as "module.name".
    """
    import types

    found, seen, pending = set(), set(), [function]
    globals_of_notebook = getattr(function, "__globals__", {})
    while pending:
        code = getattr(pending.pop(), "__code__", None)
        if code is None or id(code) in seen:
            continue
        seen.add(id(code))
        codes = [code]
        while codes:
            block = codes.pop()
            codes.extend(c for c in block.co_consts if isinstance(c, types.CodeType))
            for name in block.co_names:
                found.add(name)
                value = globals_of_notebook.get(name)
                module = getattr(value, "__module__", "") or ""
                if module.startswith("course_lib"):
                    found.add(f"{module}.{getattr(value, '__name__', name)}")
                if isinstance(value, types.FunctionType) and value.__globals__ is globals_of_notebook:
                    pending.append(value)
    return sorted(found)


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
