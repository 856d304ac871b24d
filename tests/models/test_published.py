"""Published weights by name: download from a loopback server, hash check, cache, errors."""
import pytest
import torch

from resnest_engine.config import Config, apply_overrides
from resnest_engine.models import WeightsError, get_model
from resnest_engine.models import published
from resnest_engine.workflows.from_config import build_model

from tests.support.weights_server import WeightsServer as Server, publish


@pytest.fixture
def hub(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_download_verify_cache_and_load(tmp_path, hub, monkeypatch):
    torch.manual_seed(1)
    ref = get_model("resnest14", num_classes=1000)
    prefix = publish(tmp_path / "srv", "resnest14", ref.state_dict())
    monkeypatch.setitem(published.PUBLISHED_WEIGHTS, "resnest14", prefix)
    server = Server(tmp_path / "srv")
    monkeypatch.setenv(published.WEIGHTS_URL_ENV, server.url)
    try:
        model = get_model("resnest14", num_classes=10, pretrained=True)
        cached = hub / f"resnest14-{prefix}.pth"
        assert cached.is_file() and len(server.requests) == 1
        own = model.state_dict()
        for k, v in ref.state_dict().items():
            if not k.startswith("fc."):
                assert torch.equal(own[k], v), k
        assert own["fc.weight"].shape == (10, 2048)  # a new classifier for 10 classes
        again = get_model("resnest14", pretrained=True)  # from the cache: no request
        assert len(server.requests) == 1 and torch.equal(again.fc.weight, ref.fc.weight)
        # MODEL.PRETRAINED: true in a config does the same
        cfg = apply_overrides(Config(), ["MODEL.NAME=resnest14", "MODEL.PRETRAINED=true"])
        built = build_model(cfg, 1000)
        assert torch.equal(built.conv1[0].weight, ref.conv1[0].weight)
        assert len(server.requests) == 1
    finally:
        server.close()


def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, hub, monkeypatch):
    state = {"w": torch.arange(4.0)}
    publish(tmp_path / "srv", "resnest50", state, claimed_hash="00000000")
    monkeypatch.setitem(published.PUBLISHED_WEIGHTS, "resnest50", "00000000")
    server = Server(tmp_path / "srv")
    monkeypatch.setenv(published.WEIGHTS_URL_ENV, server.url)
    try:
        with pytest.raises(WeightsError, match="sha256 does not start with 00000000") as info:
            published.load_published_state_dict("resnest50", progress=False)
        assert "\n" not in str(info.value) and len(server.requests) == 1
        assert not hub.exists() or not any(hub.iterdir())
    finally:
        server.close()


def test_no_network_names_the_url_and_the_cache_path(hub, monkeypatch):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(published.WEIGHTS_URL_ENV, f"http://127.0.0.1:{port}/mirror")
    with pytest.raises(WeightsError) as info:
        published.load_published_state_dict("resnest50", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"http://127.0.0.1:{port}/mirror/resnest50-528c19ca.pth" in msg
    assert str(hub / "resnest50-528c19ca.pth") in msg


def test_official_url_and_variants_without_weights():
    assert published.published_url("resnest50") == (
        "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/"
        "resnest50-528c19ca.pth")
    assert len(published.PUBLISHED_WEIGHTS) == 11
    for name in ("resnest14", "resnest26", "resnet50", "resnet50_splat"):
        with pytest.raises(WeightsError, match="no published weights.*local file"):
            published.published_url(name)
