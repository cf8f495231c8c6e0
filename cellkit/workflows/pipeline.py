"""Pipelines: a YAML file names the input, the stages with their options, and the output folder.

```yaml
name: demo
output: demo_out
input:
  synthetic: {n_batches: 2, plates_per_batch: 2, seed: 0}   # or: bbbc021: {root: ..., plates: [...]}
                                                            # or: index: {path: path/to/index.parquet}
                                                            # or: omezarr: {path: PLATE.ome.zarr}
stages:
  - segment: {backend: classical}
  - extract: {size: 64}
```

Stages run in order. Each stage has a key: a hash of its name, its options, the key of the stage
before it, and the cellkit version. A stage whose recorded key matches and whose outputs are
complete is skipped; one recorded with the same key but not finished resumes (stages write
resumably); one whose key changed has its outputs removed and runs again. One log
(``pipeline.log``) and one provenance record (``provenance.json``) per output folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import yaml

from .. import __version__
from .._lock import output_lock
from ..errors import CellkitError
from .schema import validate_spec
from .._logging import get_logger, log_to
from .stages import STAGES, Context

STATE_FILE = "pipeline_state.json"
logger = get_logger(__name__)


class PipelineSpecError(CellkitError, ValueError):
    """A pipeline YAML that cannot be run: every problem is listed in the message."""


def load_pipeline(path) -> dict:
    """Read (``yaml.safe_load`` only: no tags run code) and check a pipeline YAML file, before any
    stage runs. Returns the spec as a dict (``stages`` as (name, options) pairs)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PipelineSpecError(f"{path} is not UTF-8 text (byte {err.start})", "save it as UTF-8 YAML") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        if isinstance(err, yaml.constructor.ConstructorError):
            raise PipelineSpecError(f"{where}: uses a YAML tag that cellkit does not load (plain YAML only)",
                                    "remove the tag (e.g. !!python/...)") from None
        raise PipelineSpecError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or 'cannot parse'})",
                                "check the indentation and quoting there") from None
    return check_pipeline(spec, source=str(path))


def check_pipeline(spec: dict, source: str = "pipeline") -> dict:
    """Validate ``spec`` against the schema (`cellkit.workflows.schema`); raise `PipelineSpecError`
    listing every problem at once. Returns the spec with ``stages`` as (name, options) pairs."""
    problems = validate_spec(spec, STAGES)
    if problems:
        raise PipelineSpecError(f"{source}: {len(problems)} problem(s): " + "; ".join(problems),
                                "fix them all, then run again (no stage has run)")
    pairs = []
    for item in spec.get("stages") or []:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict):
            name, options = next(iter(item.items()))
        else:
            name, options = item
        pairs.append((name, dict(options or {})))
    return {**spec, "stages": pairs}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _log_warnings(stage: str, caught: list, logfile: Path) -> None:
    """Write a stage's warnings (library UserWarnings, zero-spread features, ...) to the log file, one line
    each, and log once how many there were, by kind."""
    if not caught:
        return
    with open(logfile, "a", encoding="utf-8") as f:
        for w in caught:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage}: warning {w.category.__name__}: "
                    f"{' '.join(str(w.message).split())} ({w.filename}:{w.lineno})\n")
    kinds = Counter(w.category.__name__ for w in caught)
    logger.info(f"{stage}: {len(caught)} warning(s) ({', '.join(f'{n} {k}' for k, n in kinds.most_common())}) "
                f"written to {logfile.name}")


def run_pipeline(spec: dict, *, out=None, scheduler: str | None = None, workers: int | None = None,
                 progress=None) -> dict[str, Path]:
    """Run a pipeline spec (see `load_pipeline`); returns output name -> path.

    ``out`` overrides the spec's output folder. ``progress``: progress bars of the long stages
    (None, True / ``"tqdm"`` for notebooks, ``"rich"``; see `cellkit._progress`). Messages go to
    ``logging.getLogger("cellkit")`` and, time-stamped, to ``pipeline.log`` in the output folder (with
    each stage's warnings).
    """
    spec = check_pipeline(spec)
    out = Path(out or spec["output"])
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out), log_to(out / "pipeline.log"):  # one run per output folder (a second refuses, or
        # waits with CELLKIT_LOCK_WAIT)
        return _run(spec, out, Context(out=out, scheduler=scheduler, workers=workers, progress=progress))


def _run(spec: dict, out: Path, ctx: Context) -> dict[str, Path]:
    say = logger.info
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    input_kind, input_options = next(iter(spec["input"].items()))
    input_options = {"kind": input_kind, **(input_options or {})}
    if input_kind in ("index", "omezarr"):  # a changed index file (plate metadata) makes every stage run again
        path = Path(input_options["path"])
        stat = (path / "zarr.json" if (path / "zarr.json").is_file() else path).stat()
        input_options["_fingerprint"] = [stat.st_size, stat.st_mtime_ns]
    plan = [("input", input_options)] + spec["stages"]
    provenance = {"cellkit_version": __version__, "pipeline": spec.get("name"), "stages": []}
    upstream = ""
    for name, options in plan:
        stage = STAGES[name]
        key = _key(name, options, upstream)
        upstream = key
        record = state.get(name, {})
        paths = [out / p for p in stage.outputs]
        if record.get("key") == key and record.get("complete") and all(p.exists() for p in paths):
            say(f"{name}: up to date, skipped")
        else:
            if record.get("key") not in (None, key):
                say(f"{name}: inputs or options changed, running again")
                for p in paths:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            state[name] = {"key": key, "complete": False}
            state_path.write_text(json.dumps(state, indent=2))
            started = time.time()
            say(f"{name}: running {options}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    stage.run(ctx, **{k: v for k, v in options.items() if not k.startswith("_")})
                finally:
                    _log_warnings(name, caught, out / "pipeline.log")
            state[name] = {"key": key, "complete": True, "seconds": round(time.time() - started, 2)}
            state_path.write_text(json.dumps(state, indent=2))
            say(f"{name}: done in {state[name]['seconds']} s")
        ctx.outputs.update({Path(p).stem: out / p for p in stage.outputs})
        provenance["stages"].append({"name": name, "options": options, "key": key})
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    return dict(ctx.outputs)
