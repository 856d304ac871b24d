"""The hand-written autograd of the split-attention glue against the plain formulation."""
from __future__ import annotations

import pytest
import torch

from resnest_engine.models.split_attention import (
    SplitAttention, _RadixWeightedSum, _SplitGap, radix_weighted_sum, split_gap,
)


def _plain(x, attn):
    radix = attn.shape[1]
    gap = (x.unflatten(1, (radix, -1)).sum(1) if radix > 1 else x).mean((2, 3), keepdim=True)
    out = (x.unflatten(1, (radix, -1)) * attn[..., None, None]).sum(1)
    return gap, out


@pytest.mark.parametrize("radix", [1, 2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(radix, channels_last):
    gen = torch.Generator().manual_seed(radix)
    x = torch.randn(2, radix * 3, 4, 5, dtype=torch.double, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    attn = torch.randn(2, radix, 3, dtype=torch.double, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _SplitGap.apply(t, radix), (x,))
    assert torch.autograd.gradcheck(_RadixWeightedSum.apply, (x, attn))


DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
          (torch.bfloat16, torch.float32), (torch.float16, torch.float16)]


@pytest.mark.parametrize("radix", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{d[0]}-{d[1]}".replace("torch.", ""))
def test_forward_bit_identical_to_plain(radix, channels_last, dtypes):
    x = torch.randn(4, radix * 16, 14, 14).relu().to(dtypes[0])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    attn = torch.softmax(torch.randn(4, radix, 16), dim=1).to(dtypes[1])
    gap, out = _plain(x, attn)
    # Bitwise by construction: the same products, added in the same order (torch.sum over <= 4
    # splits adds them one by one; half precision with radix > 2 calls the same sum).
    assert torch.equal(split_gap(x, radix), gap)
    assert torch.equal(radix_weighted_sum(x, attn), out)
    x.requires_grad_()
    assert torch.equal(radix_weighted_sum(x, attn), out)  # the autograd path too
    # The output keeps the input's memory layout.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert radix_weighted_sum(x, attn).is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("radix,cardinality", [(1, 1), (2, 1), (4, 2), (2, 2)])
def test_module_grads_match_plain_autograd(radix, cardinality):
    """Whole module, float64: custom backward == built-in autograd of the plain formulation."""
    torch.manual_seed(0)
    sa = SplitAttention(16, 16, radix=radix, cardinality=cardinality).double().train()
    x = torch.randn(3, 16, 6, 6, dtype=torch.double)

    def plain_forward(m, inp):
        y = m.relu(m.bn0(m.conv(inp)))
        b = y.shape[0]
        gap, _ = _plain(y, torch.ones(b, radix, m.out_channels, dtype=y.dtype))
        attn = m.fc2(m.relu(m.bn1(m.fc1(gap))))
        if radix == 1:
            return y * torch.sigmoid(attn)
        attn = attn.view(b, m.cardinality, radix, -1).transpose(1, 2)
        attn = torch.softmax(attn, 1).reshape(b, radix, m.out_channels)
        return _plain(y, attn)[1]

    grads = []
    for fn in (lambda inp: sa(inp), lambda inp: plain_forward(sa, inp)):
        sa.zero_grad()
        xx = x.clone().requires_grad_()
        out = fn(xx)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([xx.grad] + [p.grad.clone() for p in sa.parameters()])
    # float64 (eps 2.2e-16), another backward order: rtol 1e-9 = 4.5e6 eps; atol 1e-12 for
    # elements near zero (the fc1 bias before BatchNorm: noise of ~eps * the gradients ~1).
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
