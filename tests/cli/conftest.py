import pytest
import yaml

from tests.support.cli import TINY, merge


@pytest.fixture
def write_config(tmp_path):
    def _write(extra=None, name="tiny.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(merge(TINY, extra)))
        return path
    return _write
