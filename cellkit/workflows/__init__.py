"""Workflows: files in -> files out. The only layer that writes run folders.

- `pipeline`: the YAML pipeline runner (`run_pipeline`, `load_pipeline`); `stages`: the stages it runs.
- `profiles`: the profile recipe (`prepare_profiles`, `evaluate_profiles`, `demo_profiles`,
  `compare_representations`).
- `robustness`: the robustness report (`write_report`).
- `demo`: the demo pipeline (`run_demo`).

Workflows import the library (``io``, ``pp``, ``tl``, ``pl``, ...); the library never imports workflows.
Submodules are imported on use: ``from cellkit.workflows.profiles import prepare_profiles``.
"""
