import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from resnest_engine.data import DataError, DataOptions, build_eval_transform, build_train_transform
from resnest_engine.data.reproducible import SeededDataset, TransformedSample, sample_seed
from resnest_engine.data.transforms import ECenterCrop, ERandomCrop, Lighting
from resnest_engine.data.transforms import ecenter_crop_box, erandom_crop_box, lighting_offset

from tests.support.data import write_image


class SameImage(torch.utils.data.Dataset):
    """Every index holds the same image, so any difference between indices comes from the RNG."""

    def __init__(self, img, n=16):
        self.img, self.n = img, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.img, 0


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = write_image(str(tmp_path_factory.mktemp("img") / "p.png"), size=(64, 48), seed=3)
    return Image.open(path).convert("RGB")


VARIANTS = {
    "rrc": dict(hflip=False),
    "hflip": dict(),
    "color_jitter": dict(color_jitter=0.4),
    "pca_lighting": dict(pca_lighting=0.1),
    "rand_aug": dict(rand_aug=(2, 9)),
    "auto_aug": dict(auto_aug=True),
    "trivial_aug": dict(trivial_aug=True),
    "random_erase": dict(random_erase=1.0),
    "small_image": dict(small_image=True),
    "all": dict(color_jitter=0.4, pca_lighting=0.1, auto_aug=True, random_erase=0.5),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_train_transform_shape_dtype_and_keyed_determinism(photo, name):
    crop = 32
    opts = DataOptions(crop_size=crop, **VARIANTS[name])
    ds = SeededDataset(TransformedSample(SameImage(photo), build_train_transform(opts)), 16, seed=5)
    x, _ = ds[(0, 0)]
    assert x.shape == (3, crop, crop) and x.dtype == torch.float32 and type(x) is torch.Tensor
    assert torch.equal(x, ds[(0, 0)][0])  # same (seed, epoch, index) -> same pixels
    assert any(not torch.equal(x, ds[(0, i)][0]) for i in range(1, 9))  # another index
    assert any(not torch.equal(x, ds[(e, 0)][0]) for e in range(1, 9))  # another epoch
    other_seed = SeededDataset(ds.sample_fn, 16, seed=6)
    assert any(not torch.equal(x, other_seed[(0, i)][0]) for i in range(0, 8))


def test_keyed_draws_leave_global_rng_alone(photo):
    ds = SeededDataset(TransformedSample(SameImage(photo), build_train_transform(DataOptions(crop_size=16))),
                       4, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ds[(0, 1)]
    assert torch.equal(torch.rand(3), expected)


def test_sample_seed_mixes_all_fields():
    seeds = {sample_seed(0, e, i, r) for e in range(4) for i in range(50) for r in range(2)}
    assert len(seeds) == 400 and sample_seed(1, 0, 0) != sample_seed(0, 0, 0)


def test_gray_and_tensor_inputs(photo):
    opts = DataOptions(crop_size=24, in_chans=1, pca_lighting=0, color_jitter=0.3, auto_aug=True)
    x = build_train_transform(opts)(photo.convert("L"))
    assert x.shape == (1, 24, 24)
    t = tv_tensors.Image(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert build_train_transform(DataOptions(crop_size=24, random_erase=1.0))(t).shape == (3, 24, 24)


@pytest.mark.parametrize("crop,fraction,size,expected_resize", [
    (224, 0.875, (500, 375), 256), (160, 0.875, (300, 200), 183), (32, 1.0, (40, 30), 32),
])
def test_eval_resize_then_center_crop(crop, fraction, size, expected_resize):
    from resnest_engine.data.transforms import eval_resize_size

    opts = DataOptions(crop_size=crop, eval_crop_fraction=fraction)
    assert eval_resize_size(opts) == expected_resize  # ceil(crop / fraction)
    img = Image.new("RGB", size, (10, 200, 30))
    x = build_eval_transform(opts)(img)
    assert x.shape == (3, crop, crop)
    # Deterministic (no random draws in eval).
    assert torch.equal(x, build_eval_transform(opts)(img))


def test_eval_ecenter_crop_at_320():
    opts = DataOptions(crop_size=320)
    img = Image.new("RGB", (400, 300))
    assert build_eval_transform(opts)(img).shape == (3, 320, 320)
    # The centre square is 320/352 of the short side.
    top, left, h, w = ecenter_crop_box(400, 300, 320)
    assert h == w == 273 and (top, left) == (14, 64)  # 273 = round(300 * 320 / 352)
    assert ECenterCrop(320)(img).size == (320, 320)
    t = torch.arange(300 * 400, dtype=torch.float32).view(1, 300, 400)
    out = ECenterCrop(320, "bilinear")(t)
    assert out.shape == (1, 320, 320)


def test_small_image_eval_is_identity_at_native_size():
    opts = DataOptions(crop_size=32, small_image=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    t = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    x = build_eval_transform(opts)(tv_tensors.Image(t))
    assert torch.allclose(x, t.float() / 255)  # rtol 1e-5 = 84 eps32 (0 / 255 is exactly 0)


def test_erandom_crop_boxes_follow_the_official_limits():
    torch.manual_seed(0)
    for width, height in [(500, 375), (375, 500), (1600, 1200), (400, 400)]:
        for _ in range(200):
            top, left, h, w = erandom_crop_box(width, height, 320)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            if (top, left, h, w) != ecenter_crop_box(width, height, 320):
                assert 0.1 * width * height <= h * w <= width * height
                assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    x = ERandomCrop(320)(Image.new("RGB", (500, 375)))
    assert x.size == (320, 320)
    opts = DataOptions(crop_size=320, hflip=False)
    assert build_train_transform(opts)(Image.new("RGB", (500, 375))).shape == (3, 320, 320)


def test_lighting_adds_the_pca_offset():
    torch.manual_seed(0)
    img = torch.zeros(3, 4, 4)
    light = Lighting(0.1)
    torch.manual_seed(7)
    out = light(img)
    torch.manual_seed(7)
    alpha = torch.randn(3) * 0.1
    expected = lighting_offset(alpha)
    # 0 + offset, the same lighting_offset of the same draw: bitwise by construction
    assert torch.allclose(out[:, 0, 0], expected) and torch.allclose(out[:, 3, 3], expected)
    # Hand check of the formula: eigvec @ (alpha * eigval).
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])
    # The same 3 products summed in another order; terms ~3e-3 (one ulp <= 2.3e-10): the
    # default atol 1e-8 is >= 40 ulps of them (0 measured).
    assert torch.allclose(expected, eigvec @ (alpha * eigval))


@pytest.mark.parametrize("bad,match", [
    (dict(crop_size=0), "data.crop_size"), (dict(eval_crop_fraction=1.5), "data.eval_crop_fraction"),
    (dict(interpolation="cubic"), "data.interpolation"), (dict(rand_aug=(2,)), "data.rand_aug"),
    (dict(auto_aug=True, trivial_aug=True), "at most one"), (dict(random_erase=2.0), "data.random_erase"),
    (dict(in_chans=1, pca_lighting=0.1), "data.pca_lighting"), (dict(mean=(0.5, 0.5)), "data.mean"),
])
def test_invalid_options_name_the_field(bad, match):
    with pytest.raises(DataError, match=match):
        build_train_transform(DataOptions(**bad))
