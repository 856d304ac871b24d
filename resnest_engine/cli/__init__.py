"""The console commands: ``resnest-train`` (argument parsing, run-directory rules, distributed
launch, error reporting), ``resnest-predict``, ``resnest-average`` and ``resnest-report`` (the
command lines of :func:`resnest_engine.workflows.predict.predict`,
:func:`resnest_engine.workflows.average.average_checkpoints` and :func:`resnest_engine.workflows.report.write_report`).

User errors (config, paths, flags, unusable checkpoints) end with one line on stderr and exit
status 2; a NaN/Inf loss exits 3; an interrupted run (SIGTERM/SIGINT, resume point written) 4;
failures of the machine (any file that cannot be written, a dead DataLoader worker) 1
(:func:`.exit_codes.exit_status` maps every error). ``python -m resnest_engine.cli``
is ``resnest-train``.

- :mod:`.args`: the command line and the official script's flags;
- :mod:`.launch`: processes (spawn, torchrun, srun), the writer rank, the world size;
- :mod:`.run_dir`: the run directory's lock, its weights, export targets;
- :mod:`.train`: the command itself;
- :mod:`.predict`, :mod:`.average`, :mod:`.report`: ``resnest-predict``, ``resnest-average``,
  ``resnest-report`` (also ``python -m resnest_engine.cli.<name>``);
- :mod:`.console`: the exit statuses every console command shares.
"""
from .train import main

# What the docs teach from Python is the commands; the pieces behind them stay in their modules
# (.args.build_parser, .launch.resolve_launch_args, .console.UsageError, ...).
__all__ = ["main"]
