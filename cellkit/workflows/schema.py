"""The pipeline YAML schema: every problem of a spec found at once, before any stage runs.

Checked: top-level keys (``name``, ``description``, ``output``, ``input``, ``stages``), the input
(exactly one of ``synthetic`` with `SyntheticConfig` fields, ``bbbc021`` with ``root``,
``plates``, ``image_csv``, ``moa_csv``, ``index`` with ``path``, ``omezarr`` with ``path``), each stage's name and options
against the stage function's own signature (unknown keys, types from its annotations and
defaults) plus the value ranges in `RANGES`, and the ``embed`` stage's training ``config`` keys
(`cellkit.models.options.default_config`). `validate_spec` returns the list of problems, each
naming where it is (``stages[2].extract.size``) and what is allowed.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields as dataclass_fields

from ..extract.plan import BORDER_POLICIES

TOP_LEVEL = {"name", "description", "output", "input", "stages"}


def _choices(*allowed):
    return (lambda v: v in allowed), f"one of {', '.join(map(str, allowed))}"


RANGES = {
    ("segment", "backend"): _choices("classical", "cellpose", "auto"),
    ("segment", "diameter"): ((lambda v: v is None or v == "auto" or (not isinstance(v, str) and v > 0)),
                              "a positive number of pixels or 'auto'"),
    ("extract", "size"): ((lambda v: v >= 2), "an integer >= 2"),
    ("extract", "border"): _choices(*BORDER_POLICIES),
    ("profile", "max_cluster_cells"): ((lambda v: v >= 1), "an integer >= 1"),
    ("qc", "blur_z"): ((lambda v: v > 0), "a number > 0"),
    ("qc", "saturated"): ((lambda v: 0 <= v <= 1), "a fraction in [0, 1]"),
    ("qc", "empty"): ((lambda v: 0 <= v <= 1), "a fraction in [0, 1]"),
    ("qc", "saturation"): ((lambda v: v is None or v > 0), "a positive grey level"),
    ("illumination", "size"): ((lambda v: v is None or v > 0), "a positive size in pixels"),
    ("embed", "methods"): ((lambda v: len(v) > 0), "a non-empty list of methods"),
}

INPUTS = {
    "bbbc021": {"root": str, "plates": list, "image_csv": str, "moa_csv": str},
    "index": {"path": str},
    "omezarr": {"path": str},
}
INPUT_KINDS = ("synthetic", "bbbc021", "index", "omezarr")
REQUIRED_INPUT = {"bbbc021": ["root"], "index": ["path"], "omezarr": ["path"]}


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(kind, getattr(kind, "__name__", str(kind)))


def _accepts(kind, value) -> bool:
    """Whether ``value`` (parsed YAML) fits the annotation ``kind``."""
    origin = typing.get_origin(kind)
    if origin is typing.Union or type(kind).__name__ == "UnionType":
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is typing.Any or kind is inspect.Parameter.empty:
        return True
    base = origin or kind
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base in (tuple, list):
        return isinstance(value, (list, tuple))
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _describe(kind) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Union or type(kind).__name__ == "UnionType":
        names = " or ".join(_type_name(typing.get_origin(a) or a) for a in args)
        return f"{names} (or null)" if len(args) < len(typing.get_args(kind)) else names
    return _type_name(typing.get_origin(kind) or kind)


def _stage_parameters(fn) -> dict[str, object]:
    """Option name -> annotation of a stage function (after ``ctx``; ``**options`` excluded)."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())[1:]
    return {p.name: hints.get(p.name, type(p.default) if p.default not in (None, inspect.Parameter.empty)
                              else typing.Any)
            for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _check_options(where: str, stage: str, options, parameters: dict, problems: list[str]) -> None:
    if not isinstance(options, dict):
        problems.append(f"{where}: options must be a mapping, got {type(options).__name__}")
        return
    for key, value in options.items():
        if key not in parameters:
            problems.append(f"{where}.{key}: unknown option; known: {', '.join(sorted(parameters)) or 'none'}")
            continue
        kind = parameters[key]
        if not _accepts(kind, value):
            problems.append(f"{where}.{key}: must be {_describe(kind)}, got {type(value).__name__}")
            continue
        rule = RANGES.get((stage, key))
        if rule is not None:
            ok, wanted = rule
            try:
                good = ok(value)
            except TypeError:
                good = False
            if not good:
                problems.append(f"{where}.{key}: must be {wanted}, got {value!r}")


def _check_input(spec: dict, problems: list[str]) -> None:
    from ..datasets import SyntheticConfig

    inputs = spec.get("input")
    if not isinstance(inputs, dict) or len(inputs) != 1 or next(iter(inputs)) not in INPUT_KINDS:
        problems.append(f"input must be exactly one of: {', '.join(INPUT_KINDS)}")
        return
    kind, options = next(iter(inputs.items()))
    options = options if options is not None else {}
    if kind == "synthetic":
        hints = typing.get_type_hints(SyntheticConfig)
        parameters = {f.name: hints.get(f.name, typing.Any) for f in dataclass_fields(SyntheticConfig)}
    else:
        parameters = INPUTS[kind]
    before = len(problems)
    _check_options(f"input.{kind}", f"input.{kind}", options, parameters, problems)
    if not isinstance(options, dict):
        return
    for key in REQUIRED_INPUT.get(kind, []):
        if key not in options:
            problems.append(f"input.{kind}.{key}: required")
    if kind == "synthetic" and len(problems) == before:
        try:
            SyntheticConfig(**options).validate()
        except (TypeError, ValueError) as err:
            problems.append(f"input.synthetic: {err}")


def _check_embed_config(where: str, options: dict, problems: list[str]) -> None:
    config = options.get("config")
    if not isinstance(config, dict):
        return
    try:
        from ..models.options import default_config
    except ImportError:
        return
    for method in options.get("methods") or ("simclr",):
        try:
            default_config(str(method), **dict(config))
        except (TypeError, ValueError) as err:
            problems.append(f"{where}.config ({method}): {err}")


def validate_spec(spec, stages: dict) -> list[str]:
    """Every problem of a pipeline spec (a parsed YAML document), as one-line strings; [] when valid."""
    if not isinstance(spec, dict):
        return [f"a pipeline is a mapping with input, stages and output, got {type(spec).__name__}"]
    problems = [f"{k}: unknown top-level key; known: {', '.join(sorted(TOP_LEVEL))}"
                for k in spec if k not in TOP_LEVEL]
    problems += [f"{k}: required" for k in ("input", "output") if k not in spec]
    if "output" in spec and not isinstance(spec["output"], str):
        problems.append(f"output: must be a folder path (a string), got {type(spec['output']).__name__}")
    _check_input(spec, problems)
    items = spec.get("stages") or []
    if not isinstance(items, list):
        return problems + [f"stages: must be a list, got {type(items).__name__}"]
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = {} if options is None else options
        elif isinstance(item, (tuple, list)) and len(item) == 2:  # an already checked spec
            name, options = item
        else:
            problems.append(f"stages[{i}]: a stage is a name or a one-key mapping name: options")
            continue
        where = f"stages[{i}].{name}"
        if name not in stages or name == "input":
            problems.append(f"stages[{i}]: unknown stage {name!r}; known: "
                            f"{', '.join(sorted(s for s in stages if s != 'input'))}")
            continue
        _check_options(where, name, options, _stage_parameters(stages[name].run), problems)
        if name == "embed" and isinstance(options, dict):
            _check_embed_config(where, options, problems)
    return problems
