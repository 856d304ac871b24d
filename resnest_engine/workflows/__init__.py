"""Workflows: what the console commands do, as library functions.

``train`` (:mod:`.train`: a recipe run, top to bottom), the resume source (:mod:`.resume`),
config -> pieces (:mod:`.from_config`), ``evaluate``, ``predict``, ``export_weights``,
``write_report``, ``average_checkpoints``, and which files a run directory holds
(:mod:`.run_files`). They compose the subpackages; only ``cli/`` (and each other) import them.
"""
