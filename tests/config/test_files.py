"""YAML config files: _BASE_ chains, errors that name the file, YAML quirks, writing."""
import pytest
import yaml

from resnest_engine.config import Config, apply_overrides, diff_configs, dump_config, load_config
from tests.support.config import error, write


def test_base_inheritance_two_levels_relative_to_including_file(tmp_path, monkeypatch):
    write(tmp_path / "grand.yaml", "SEED: 1\nTRAINING:\n  EPOCHS: 10\n  BATCH_SIZE: 128\n"
                                   "MODEL:\n  NAME: resnest101\n")
    write(tmp_path / "sub" / "base.yaml", "_BASE_: ../grand.yaml\nTRAINING:\n  EPOCHS: 20\n"
                                          "OPTIMIZER:\n  STEPS: [5, 8]\n")
    child = write(tmp_path / "sub" / "deeper" / "child.yaml",
                  "_BASE_: ../base.yaml\nMODEL:\nTRAINING:\n  BATCH_SIZE: 64\n"
                  "OPTIMIZER:\n  STEPS: [3]\n")
    monkeypatch.chdir(tmp_path / "sub" / "deeper")  # relative to the file, not to the cwd
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_config(str(child))
    assert cfg.SEED == 1  # from grand
    assert cfg.MODEL.NAME == "resnest101"  # an empty child section keeps the base's
    assert cfg.TRAINING.EPOCHS == 20  # base beats grand
    assert cfg.TRAINING.BATCH_SIZE == 64  # child beats both
    assert cfg.OPTIMIZER.STEPS == [3]  # lists are replaced, not merged
    assert load_config(child, ["TRAINING.EPOCHS=7"]).TRAINING.EPOCHS == 7  # PathLike too


def test_base_list_and_error_origin(tmp_path):
    write(tmp_path / "a.yaml", "TRAINING:\n  EPOCHS: 0\n")
    write(tmp_path / "b.yaml", "SEED: 5\n")
    child = write(tmp_path / "c.yaml", "_BASE_: [a.yaml, b.yaml]\n")
    msg = error(load_config, str(child))
    assert msg.startswith("TRAINING.EPOCHS: expected an integer >= 1, got 0")
    assert "a.yaml" in msg  # where the bad value came from
    assert load_config(str(child), ["TRAINING.EPOCHS=30"]).SEED == 5


def test_base_cycles(tmp_path):
    a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    msg = error(load_config, str(a))
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg
    selfref = write(tmp_path / "self.yaml", "_BASE_: ./self.yaml\n")
    assert "cycle" in error(load_config, str(selfref))


def test_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", "SEED: 2\n")
    write(tmp_path / "l.yaml", "_BASE_: root.yaml\n")
    write(tmp_path / "r.yaml", "_BASE_: root.yaml\n")
    top = write(tmp_path / "top.yaml", "_BASE_: [l.yaml, r.yaml]\n")
    assert load_config(str(top)).SEED == 2


def test_missing_base(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: nothere.yaml\n")
    msg = error(load_config, str(child))
    assert msg.startswith(str(child)) and "nothere.yaml" in msg and "not found" in msg


@pytest.mark.parametrize("text, expect", [
    ("TRAINING:\n  EPOCHS: [5\n", ":4:"),  # syntax error at the line it is found (after FORMAT)
    ("TRAINING:\n  EPOCHS: 5\n  EPOCHS: 6\n", ":4:"),  # duplicate key, line of the repeat
    ("- 1\n- 2\n", "mapping"),  # not a mapping (written without the FORMAT line)
    ("_BASE_: 3\n", "_BASE_"),
    ("MODEL: resnest50\n", "MODEL: expected a mapping"),
])
def test_file_errors_name_the_path(tmp_path, text, expect):
    path = write(tmp_path / "bad.yaml", text, official=text.startswith("- "))
    msg = error(load_config, str(path))
    assert expect in msg
    if expect != "MODEL: expected a mapping":
        assert msg.startswith(str(path))


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    msg = error(load_config, str(missing))
    assert msg.startswith(str(missing)) and "not found" in msg
    assert error(load_config, str(tmp_path)).startswith(str(tmp_path))  # a directory
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert error(load_config, str(binary)).startswith(str(binary))


def test_empty_file_gives_defaults_and_yaml_quirks(tmp_path):
    assert load_config(str(write(tmp_path / "empty.yaml", ""))) == Config()
    cfg = load_config(str(write(tmp_path / "q.yaml",
                                "TRAINING:\n  AMP: off\nLOGGING:\n  PROGRESS_BAR: on\n"
                                "OPTIMIZER:\n  WEIGHT_DECAY: 5e-5\n  MIN_LR: 1.0e-6\n"
                                "DATA:\n  RAND_AUG: 2,9\n")))
    assert cfg.TRAINING.AMP == "off" and cfg.LOGGING.PROGRESS_BAR == "on"
    assert cfg.OPTIMIZER.WEIGHT_DECAY == 5e-5 and cfg.OPTIMIZER.MIN_LR == 1e-6
    assert cfg.DATA.RAND_AUG == "2,9"


def test_dump_round_trip(tmp_path):
    cfg = apply_overrides(Config(), [
        "SEED=7", "MODEL.NAME=resnest101", "MODEL.NUM_CLASSES=100", "MODEL.STEM=deep",
        "MODEL.PRETRAINED=/w/x.pth", "DATA.ROOT='1e-4'", "DATA.RAND_AUG=2,9",
        "DATA.EVAL_CROP_FRACTION=0.9", "TRAINING.AMP=off", "TRAINING.EPOCHS=100",
        "OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30,60]", "OPTIMIZER.MIN_LR=1e-10",
        "OPTIMIZER.WEIGHT_DECAY=3e-5", "OPTIMIZER.BETAS=[0.8, 0.95]", "LOGGING.PROGRESS_BAR=on",
        "TRAINING.EMA_DECAY=0.9999",
    ])
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir()
    dump_config(cfg, path)
    assert load_config(str(path)) == cfg
    assert diff_configs(load_config(str(path)), cfg) == []
    plain = yaml.safe_load(path.read_text())  # readable by any YAML loader
    assert plain["TRAINING"]["AMP"] == "off" and plain["DATA"]["ROOT"] == "1e-4"
    assert plain["OPTIMIZER"]["MIN_LR"] == 1e-10
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temp left
    dump_config(Config(), str(path))  # overwrite
    assert load_config(str(path)) == Config()
