"""Storage: how a run's files reach the disk and come back.

Crash-safe writes and the one safe ``torch.load`` (:mod:`.files`), the checksums written with
every checkpoint and weights file (:mod:`.checksum`), one writer per run directory
(:mod:`.run_lock`), the run directory's names (:mod:`.run_dir`), and the scalars of a run's
TensorBoard files read back (:mod:`.event_records`, for the report). A base layer: it imports nothing from the other subpackages.
"""

# Public by module, as the docs teach them (resnest_engine.storage.checksum.with_checksum, ...);
# nothing is imported here, so the base layer stays cheap to import.
__all__ = ["checksum", "event_records", "files", "run_dir", "run_lock"]
