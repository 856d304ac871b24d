"""benchmarks/data_at_scale.py's smoke mode runs end to end (generated JPEGs, resnest-shards,
Hub Parquet, a loopback S3 server, the four loaders) and writes the results-file shape a real
run writes, so that the benchmark cannot rot between measurements."""
import json

import pytest

from tests.support.cli import run_cli

CASES = ["folder", "shards", "shards_s3", "parquet"]


@pytest.mark.slow  # a benchmark process with DataLoader workers and an S3 server, about 10 s
def test_data_at_scale_smoke(tmp_path):
    pytest.importorskip("moto")
    pytest.importorskip("pyarrow")
    pytest.importorskip("s3fs")
    out = tmp_path / "data_at_scale.json"
    # python -m benchmarks.data_at_scale, forked from the tests' fork server (no torch import)
    proc = run_cli("--smoke", "--json", out, cwd=tmp_path, timeout=180,
                   module="benchmarks.data_at_scale")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result)[:3] == ["benchmark", "measured", "machine"]
    assert result["benchmark"] == "data_at_scale" and result["smoke"] is True
    assert result["measured"].startswith("SMOKE RUN")
    assert [c["name"] for c in result["cases"]] == CASES
    for case in result["cases"]:
        assert isinstance(case["img_per_s"], float) and case["img_per_s"] > 0, case
        assert case["rounds_img_per_s"] == [case["img_per_s"]]  # one round in smoke mode
        assert case["images_per_epoch"] == 48  # drop_last: 6 batches of 8
    assert set(result["ratios"]) == {"shards_vs_folder", "shards_s3_vs_shards",
                                     "parquet_vs_shards"}
    conversion = result["conversion"]
    assert conversion["images"] == 68 and conversion["shards"] == 5  # 48 + 20 in shards of 16
    assert conversion["s_per_10k_images"] == pytest.approx(
        conversion["seconds"] * 10_000 / conversion["images"])
    assert result["parquet"]["files"] == 2  # data/train-00000-of-00001, validation-...
    # the report renders it
    from benchmarks import report
    text = report.render_data_at_scale({"data_at_scale": result})
    assert "s per 10,000 images" in text and "`shards_s3`" in text


def test_smoke_refuses_to_write_into_benchmarks_results(capsys):
    from benchmarks import data_at_scale
    with pytest.raises(SystemExit) as e:
        data_at_scale.main(["--smoke"])
    assert e.value.code == 2
    assert "give --json PATH" in capsys.readouterr().err
