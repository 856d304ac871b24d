"""Mixup / CutMix batch transform, label smoothing folded in, SoftTargetCrossEntropy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from resnest_engine.engine import create_trainer
from resnest_engine.data import MixupCutmix
from resnest_engine.engine import SoftTargetCrossEntropy

C = 10


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, C, (n,), generator=g)


def _kind(x, xo):
    """'none' / 'mixup' / 'cutmix' from how the output image relates to the input batch."""
    rolled = x.roll(1, 0)
    if torch.equal(xo, x):
        return "none"
    from_orig, from_rolled = xo == x, xo == rolled
    if bool((from_orig | from_rolled).all()):
        return "cutmix"
    return "mixup"


@pytest.mark.parametrize("mixup_alpha,cutmix_alpha", [(0.2, 0.0), (0.0, 1.0), (0.8, 1.0)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_sum_to_one(mixup_alpha, cutmix_alpha, smoothing):
    torch.manual_seed(0)
    mix = MixupCutmix(C, mixup_alpha, cutmix_alpha, prob=1.0, label_smoothing=smoothing)
    assert mix.active
    for seed in range(5):
        x, y = _batch(seed=seed)
        xo, t = mix(x, y)
        assert xo.shape == x.shape and t.shape == (8, C) and t.dtype == torch.float32
        # 10 fp32 targets in [0, 1] summed: <= ~10 roundings of <= eps/2 -> 5 eps of 1;
        # atol 1e-6 = 8.4 eps32
        torch.testing.assert_close(t.sum(1), torch.ones(8), rtol=0, atol=1e-6)
        assert _kind(x, xo) != "none"
        if smoothing:
            assert float(t.min()) >= smoothing / C - 1e-7  # 1e-7 ~ 100 ulps of 0.01


def test_mixup_targets_match_the_mixed_images():
    torch.manual_seed(1)
    mix = MixupCutmix(C, mixup_alpha=1.0, label_smoothing=0.0)
    x, y = _batch()
    y = torch.arange(8) % C  # distinct neighbours, so the two weights are separable
    xo, t = mix(x, y)
    lam = float(t[0, y[0]])
    assert 0.0 < lam < 1.0
    # fp32 defaults (rtol 1.3e-6 = 11 eps): every row's weight is computed alike (equal in fact)
    torch.testing.assert_close(t[torch.arange(8), y], torch.full((8,), lam))
    torch.testing.assert_close(t[torch.arange(8), y.roll(1)], torch.full((8,), 1 - lam))
    # lam read back in fp32 against the transform's float64 lam, plus ~2 roundings on x in
    # [0, 1): <= ~2 eps32; atol 1e-6 = 8.4 eps32 of 1, rtol 1e-5 = 84 eps32
    torch.testing.assert_close(xo, lam * x + (1 - lam) * x.roll(1, 0), rtol=1e-5, atol=1e-6)


def test_cutmix_targets_match_the_pasted_area():
    torch.manual_seed(2)
    mix = MixupCutmix(C, cutmix_alpha=1.0)
    for seed in range(4):
        x, y = _batch(seed=seed)
        y = torch.arange(8) % C
        xo, t = mix(x, y)
        assert _kind(x, xo) in ("cutmix", "none")
        frac_orig = float((xo[0] == x[0]).float().mean())  # all channels share the box
        # fp32 lam (one ulp <= 6e-8 in [0, 1]) against an exact pixel count / 768: 16 ulps
        assert float(t[0, y[0]]) == pytest.approx(frac_orig, abs=1e-6)


def test_label_smoothing_without_mixing_gives_smoothed_one_hot():
    s = 0.1
    for mix in (MixupCutmix(C, 0.0, 0.0, label_smoothing=s),       # both alphas 0: inactive
                MixupCutmix(C, 0.2, 1.0, prob=0.0, label_smoothing=s)):  # prob 0: never mixed
        assert not mix.active
        for seed in range(5):
            x, y = _batch(seed=seed)
            xo, t = mix(x, y)
            assert xo is x
            expected = F.one_hot(y, C).float() * (1 - s) + s / C
            # fp32 defaults (rtol 1.3e-6 = 11 eps32); approx's rel 1e-6 = 8.4 eps32 below
            torch.testing.assert_close(t, expected)
            assert float(t.min()) == pytest.approx(s / C)
            assert float(t.max()) == pytest.approx(1 - s + s / C)
    plain = MixupCutmix(C)
    x, y = _batch()
    torch.testing.assert_close(plain(x, y)[1], F.one_hot(y, C).float())


def test_prob_zero_never_mixes_and_prob_applies():
    torch.manual_seed(0)
    never = MixupCutmix(C, mixup_alpha=1.0, prob=0.0)
    x, y = _batch()
    assert all(never(x, y)[0] is x for _ in range(20))
    half = MixupCutmix(C, mixup_alpha=1.0, prob=0.5)
    kinds = [_kind(x, half(x, y)[0]) for _ in range(60)]
    assert 10 < kinds.count("mixup") < 50 and kinds.count("none") + kinds.count("mixup") == 60


@pytest.mark.parametrize("switch_prob,expected", [(0.0, "mixup"), (1.0, "cutmix")])
def test_switch_prob_picks_mixup_or_cutmix(switch_prob, expected):
    torch.manual_seed(3)
    mix = MixupCutmix(C, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob)
    x, y = _batch()
    kinds = {_kind(x, mix(x, y)[0]) for _ in range(15)}
    assert kinds - {"none"} == {expected}  # a cutmix box can (rarely) cover nothing


def test_switch_prob_half_uses_both():
    torch.manual_seed(4)
    mix = MixupCutmix(C, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)
    x, y = _batch()
    kinds = [_kind(x, mix(x, y)[0]) for _ in range(40)]
    assert kinds.count("mixup") >= 5 and kinds.count("cutmix") >= 5


def test_negative_alpha_rejected():
    with pytest.raises(ValueError):
        MixupCutmix(C, mixup_alpha=-0.1)


def test_attach_off_epoch_disables_after_epoch(tiny_model, loader):
    s = 0.1
    model = tiny_model(C)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mix = MixupCutmix(C, mixup_alpha=1.0, label_smoothing=s)
    targets_by_epoch = {}
    seen_y = []
    crit = SoftTargetCrossEntropy()

    trainer = None

    def loss_fn(logits, target):
        targets_by_epoch.setdefault(trainer.state.epoch, []).append(target.detach().clone())
        return crit(logits, target)

    trainer = create_trainer(model, opt, loss_fn, batch_transform=mix)
    mix.attach(trainer, off_epoch=2)
    enabled = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: enabled.append(mix.enabled))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen_y.append(e.state.output["y"]))
    torch.manual_seed(0)
    trainer.run(loader(n=16, batch_size=8, num_classes=C), max_epochs=4)
    assert enabled == [True, True, False, False]
    for epoch, targets in targets_by_epoch.items():
        t = torch.cat(targets)
        # 1e-6 ~ 1000 ulps of s / C = 0.01; a mixed row has 2 entries off it by >> that
        smoothed_one_hot = bool(((t - s / C).abs() < 1e-6).sum(1).eq(C - 1).all())
        assert smoothed_one_hot == (epoch > 2), epoch  # mixup (alpha 1) mixes every batch before
    assert all(y.dtype == torch.int64 and y.ndim == 1 for y in seen_y)  # output keeps hard labels


def test_attach_off_epoch_zero_never_disables(tiny_model, loader):
    model = tiny_model(C)
    mix = MixupCutmix(C, mixup_alpha=1.0)
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.01),
                             SoftTargetCrossEntropy(), batch_transform=mix)
    mix.attach(trainer, off_epoch=0)
    trainer.run(loader(n=8, batch_size=8, num_classes=C), max_epochs=3)
    assert mix.enabled


def test_soft_target_cross_entropy_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(16, C, dtype=torch.float64).float()
    y = torch.randint(0, C, (16,))
    crit = SoftTargetCrossEntropy()
    # Another formula for the same loss (~2.3): fp32 defaults, atol 1e-5 ~ 40 ulps of it.
    torch.testing.assert_close(crit(logits, F.one_hot(y, C).float()), F.cross_entropy(logits, y))
    torch.testing.assert_close(crit(logits, y), F.cross_entropy(logits, y))  # hard labels pass through
    for s in (0.1, 0.3):
        smoothed = MixupCutmix(C, label_smoothing=s).smooth(y)
        torch.testing.assert_close(crit(logits, smoothed),
                                   torch.nn.CrossEntropyLoss(label_smoothing=s)(logits, y))
    x, _ = _batch(n=16)
    _, mixed = MixupCutmix(C, mixup_alpha=0.4, label_smoothing=0.1)(x, y)
    torch.testing.assert_close(crit(logits, mixed), F.cross_entropy(logits, mixed))
    # bf16 logits are computed in fp32.
    torch.testing.assert_close(crit(logits.bfloat16(), mixed),
                               F.cross_entropy(logits.bfloat16().float(), mixed))
