"""Pipelines: a YAML file names the input, the stages with their options, and the output folder.

```yaml
name: demo
output: demo_out
input:
  synthetic: {n_batches: 2, plates_per_batch: 2, seed: 0}   # or: bbbc021: {root: ..., plates: [...]}
                                                            # or: index: path/to/index.parquet
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
from pathlib import Path
from typing import Callable

import yaml

from .. import __version__
from .stages import STAGES, Context

STATE_FILE = "pipeline_state.json"


def load_pipeline(path) -> dict:
    """Read and check a pipeline YAML file. Returns the spec as a dict (``stages`` as (name, options) pairs)."""
    spec = yaml.safe_load(Path(path).read_text())
    return check_pipeline(spec, source=str(path))


def check_pipeline(spec: dict, source: str = "pipeline") -> dict:
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: a pipeline is a mapping with input, stages, output")
    problems = [f"missing {k!r}" for k in ("input", "output") if k not in spec]
    inputs = spec.get("input") or {}
    if not isinstance(inputs, dict) or len(inputs) != 1 or next(iter(inputs)) not in ("synthetic", "bbbc021", "index"):
        problems.append("input must be exactly one of: synthetic, bbbc021, index")
    pairs = []
    for item in spec.get("stages") or []:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
        elif isinstance(item, (tuple, list)) and len(item) == 2:  # an already checked spec
            name, options = item
        else:
            problems.append(f"a stage is a name or a one-key mapping name: options, got {item!r}")
            continue
        if name not in STAGES:
            problems.append(f"unknown stage {name!r}; known: {sorted(STAGES)}")
        pairs.append((name, dict(options or {})))
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return {**spec, "stages": pairs}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_pipeline(spec: dict, *, out=None, scheduler: str | None = None, workers: int | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Path]:
    """Run a pipeline spec (see `load_pipeline`); returns output name -> path.

    ``out`` overrides the spec's output folder.
    """
    spec = check_pipeline(spec)
    out = Path(out or spec["output"])
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    logfile = open(out / "pipeline.log", "a")

    def say(message: str):
        logfile.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        logfile.flush()
        log(message)

    ctx = Context(out=out, scheduler=scheduler, workers=workers, log=say)
    input_kind, input_options = next(iter(spec["input"].items()))
    input_options = {"kind": input_kind, **(input_options or {})}
    if input_kind == "index":  # a changed index file makes every stage run again
        stat = Path(input_options["path"]).stat()
        input_options["_fingerprint"] = [stat.st_size, stat.st_mtime_ns]
    plan = [("input", input_options)] + spec["stages"]
    provenance = {"cellkit_version": __version__, "pipeline": spec.get("name"), "stages": []}
    upstream = ""
    try:
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
                stage.run(ctx, **{k: v for k, v in options.items() if not k.startswith("_")})
                state[name] = {"key": key, "complete": True, "seconds": round(time.time() - started, 2)}
                state_path.write_text(json.dumps(state, indent=2))
                say(f"{name}: done in {state[name]['seconds']} s")
            ctx.outputs.update({Path(p).stem: out / p for p in stage.outputs})
            provenance["stages"].append({"name": name, "options": options, "key": key})
    finally:
        logfile.close()
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    return dict(ctx.outputs)
