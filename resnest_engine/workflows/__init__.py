"""Workflows: what the console commands do, as library functions.

``train`` (:mod:`.train`: a recipe run, top to bottom), the resume source (:mod:`.resume`),
config -> pieces (:mod:`.from_config`), ``evaluate``, ``predict``, ``export_weights``,
``write_report``, ``average_checkpoints``, ``write_shards`` (:mod:`.shards`), and which files a run directory holds
(:mod:`.run_files`). They compose the subpackages; only ``cli/`` (and each other) import them.
"""

# Public by module, as the docs teach them (resnest_engine.workflows.predict.predict,
# .average.average_checkpoints, .report.write_report, .train.train, ...): a function of the
# same name as its module cannot live here. .from_config, .resume and .run_files are internal.
__all__ = ["average", "evaluate", "export", "predict", "report", "shards", "train"]
