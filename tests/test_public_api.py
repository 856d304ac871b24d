"""The public API: each subpackage's ``__all__`` is what docs/ and README.md teach, and every
public builder says what each of its arguments is (an ``Args:`` block, Google style).

A name leaving ``__all__`` stays importable from its defining module; a name joining it joins the
docs too. Change a list below only together with the docs and CHANGELOG.md."""
import importlib
import inspect
import re

import pytest

PUBLIC = {
    "resnest_engine.cli": ["main"],
    "resnest_engine.config": [
        "Config", "ConfigError", "DataConfig", "FORMAT_KEY", "FORMAT_MARKER", "LoadedConfig",
        "LoggingConfig", "ModelConfig", "NONDETERMINISTIC_SAFE_KEYS", "OptimizerConfig",
        "RESUME_SAFE_KEYS", "SCHEDULE_ALIASES", "TRAJECTORY_KEYS", "TrainingConfig",
        "apply_overrides", "check_resume_overrides", "config_from_dict", "config_to_dict",
        "config_warnings", "diff_configs", "dump_config", "dump_config_text", "effective_lr",
        "eval_batch_per_process", "load_config", "read_config", "train_micro_batch",
        "validate_config",
    ],
    "resnest_engine.data": [
        "DataError", "DataOptions", "MixupCutmix", "SamplerEpochs", "WorkerDiedError",
        "build_dataset", "build_eval_transform", "build_train_transform", "close_loader",
        "create_loaders", "list_datasets",
    ],
    "resnest_engine.engine": [
        "SeededDeterministicEngine", "SoftTargetCrossEntropy", "TrainEvents", "create_evaluator",
        "create_optimizer", "create_trainer", "epochs_filter", "mid_epoch_filter", "param_groups",
    ],
    "resnest_engine.handlers": [
        "CheckpointError", "DropBlockRamp", "FinalWeights", "FreezeBody", "GracefulInterrupt",
        "LRScale", "MLflowTracking", "MetricsHistory", "NanGuard", "StandardHandlers",
        "StandardOptions", "TensorBoard", "TrainLogger", "Validation", "attach_standard_handlers",
        "build_standard_handlers", "check_architecture", "create_best_checkpointer", "create_ema",
        "create_lr_scheduler", "create_progress_bar", "create_resume_checkpointer",
        "list_checkpoints", "load_checkpoint", "read_checkpoint", "setup_logger",
    ],
    "resnest_engine.models": [
        "ResNet", "UnknownModelError", "WeightsError", "get_model", "list_models",
        "load_pretrained", "set_dropblock_prob",
    ],
    "resnest_engine.official": [
        "BATCH_LINE", "EPOCH_LINE", "OFFICIAL_DEFAULTS", "OFFICIAL_KEYS", "OFFICIAL_ONLY_KEYS",
        "OFFICIAL_RESNET_NAMES", "VALIDATION_LINE", "is_official_checkpoint",
        "load_config", "load_official_checkpoint", "read_config", "read_resume_file",
        "translate_official",
    ],
    # public by module (the docs write resnest_engine.storage.checksum.with_checksum, ...)
    "resnest_engine.storage": ["checksum", "event_records", "files", "run_dir", "run_lock"],
    "resnest_engine.workflows": ["average", "evaluate", "export", "predict", "report", "shards",
                                 "train"],
}

#: The documented workflows (docs/running.md, docs/index.md), taught by their module paths.
WORKFLOWS = [
    ("resnest_engine.workflows.train", "train"),
    ("resnest_engine.workflows.evaluate", "evaluate"),
    ("resnest_engine.workflows.predict", "predict"),
    ("resnest_engine.workflows.export", "export_weights"),
    ("resnest_engine.workflows.report", "write_report"),
    ("resnest_engine.workflows.average", "average_checkpoints"),
    ("resnest_engine.workflows.average", "average_state_dicts"),
    ("resnest_engine.workflows.shards", "write_shards"),
    ("resnest_engine.workflows.shards", "index_shards"),
]

BUILDER = re.compile(r"^(create|build|make|get)_")


def _resolve(package, name):
    module = importlib.import_module(package)
    if hasattr(module, name):
        return getattr(module, name)
    return importlib.import_module(f"{package}.{name}")  # a submodule, as `import *` finds it


def _builders():
    for package, names in PUBLIC.items():
        for name in names:
            if BUILDER.match(name):
                yield f"{package}.{name}", _resolve(package, name)
    for module, name in WORKFLOWS:
        yield f"{module}.{name}", getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_the_documented_list(package):
    assert PUBLIC[package] == sorted(PUBLIC[package])  # keep the lists above readable
    assert sorted(importlib.import_module(package).__all__) == PUBLIC[package]


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_public_name_resolves(package):
    for name in PUBLIC[package]:
        assert _resolve(package, name) is not None, f"{package}.{name}"


def _args_block(doc):
    """The parameter names an ``Args:`` block lists (one ``name: text`` line per argument)."""
    match = re.search(r"^(\s*)Args:\s*$", doc, re.MULTILINE)
    if match is None:
        return None
    names, indent = [], None
    for line in doc[match.end():].splitlines()[1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width <= len(match.group(1)):
            break  # the next section (Returns:, Raises:, prose)
        if indent is None:
            indent = width
        if width == indent:
            names.append(re.match(r"\*{0,2}(\w+)", line.strip()).group(1))
    return names


@pytest.mark.parametrize("qualname,builder", list(_builders()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_builder_documents_its_arguments(qualname, builder):
    doc = inspect.getdoc(builder)
    assert doc, f"{qualname} has no docstring"
    listed = _args_block(doc)
    assert listed is not None, f"{qualname}'s docstring has no Args: block"
    params = [p for p in inspect.signature(builder).parameters if p not in ("self", "cls")]
    assert listed == params, f"{qualname}: Args: lists {listed}, the signature has {params}"
