"""EvoNorm-S0, spectral norm ("SN"), SwitchNorm and the get_norm factory against independent references.

Every reference below is written with other ops than the layer it checks (explicit loops over samples and
groups, einsum, direct centred variances instead of moment differences, the TF kernel layout for SN) and runs
in float64. The formulas are those of original-spec.md section 4.

timm's ``EvoNorm2dS0`` (timm 1.0.31, ``timm.layers.EvoNorm2dS0``) computes the same thing as ``EvoNormS0``:
contiguous channel groups, biased variance over (C/G, H, W) in fp32, eps 1e-5 inside the sqrt, no mean
subtraction, gamma 1 / beta 0 / v 1 at init, the std cast to the input dtype before the division. It differs in:

- groups: timm keeps ``groups=32`` as given and asserts ``C % groups == 0`` (so 24 or 16 channels fail with
  the default); ``EvoNormS0`` halves 32 until it divides C. The comparison passes our group count to timm.
- dtype: both return the input dtype (parameters cast to it); ``EvoNormS0`` computes the statistics in fp32 for
  fp16/bf16 input and in the input's own precision for fp64.
- timm has ``apply_act=False`` (no v, no sigmoid); ``EvoNormS0`` always applies its activation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from od2.layers.conv_norm import ConvNormAct, NormAct
from od2.layers.evonorm import EvoNormS0
from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.layers.groups import num_groups
from od2.layers.norms import (
    NORMS,
    SyncBatchNorm2d,
    get_norm,
    is_norm_module,
    norm_includes_activation,
    norm_uses_bias,
)
from od2.layers.spectral_norm import SpectralNorm2d
from od2.layers.switch_norm import SwitchNorm2d

F64 = torch.float64


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random non-trivial value (scales stay away from 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(1 + 0.5 * noise if name in ("weight", "v") else noise)
    return module


# ----------------------------------------------------------------------------------------------- EvoNorm-S0


def evonorm_s0_reference(x, gamma, beta, v, groups, eps=1e-5):
    """Loop over samples and groups; variance as the centred second moment; sigmoid written out."""
    x = x.to(F64)
    gamma, beta, v = gamma.detach().to(F64), beta.detach().to(F64), v.detach().to(F64)
    batch, channels = x.shape[:2]
    per_group = channels // groups
    out = torch.empty_like(x)
    for b in range(batch):
        for g in range(groups):
            chans = list(range(g * per_group, (g + 1) * per_group))
            block = x[b, chans]  # [C/G, H, W]
            count = block.numel()
            mean = block.sum() / count
            var = ((block - mean) ** 2).sum() / count
            for c in chans:
                gate = 1.0 / (1.0 + torch.exp(-v[c] * x[b, c]))
                out[b, c] = x[b, c] * gate / torch.sqrt(var + eps) * gamma[c] + beta[c]
    return out


@pytest.mark.parametrize("channels, groups", [(256, 32), (64, 32), (24, 8), (16, 16), (8, 8), (6, 2)])
def test_evonorm_group_count_halves_32_until_it_divides(channels, groups):
    assert num_groups(channels, 32) == groups
    assert EvoNormS0(channels).groups == groups


def test_evonorm_init_and_attributes():
    layer = EvoNormS0(24)
    assert torch.equal(layer.weight, torch.ones(24))
    assert torch.equal(layer.bias, torch.zeros(24))
    assert torch.equal(layer.v, torch.ones(24))
    assert layer.eps == 1e-5
    assert layer.includes_activation is True
    assert dict(layer.named_buffers()) == {}


@pytest.mark.parametrize("channels", [24, 16, 64])
@pytest.mark.parametrize("random_params", [False, True])
def test_evonorm_matches_formula_in_train_and_eval(channels, random_params):
    torch.manual_seed(channels)
    layer = EvoNormS0(channels)
    if random_params:
        _randomise(layer, seed=channels)
    x = torch.randn(3, channels, 5, 4) * 2 + 0.3
    expected = evonorm_s0_reference(x, layer.weight, layer.bias, layer.v, num_groups(channels))
    out_train = layer.train()(x)
    out_eval = layer.eval()(x)
    torch.testing.assert_close(out_train.to(F64), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_train, out_eval)  # no batch statistics, nothing tracked


def test_evonorm_is_per_sample_and_works_at_batch_1():
    torch.manual_seed(1)
    layer = _randomise(EvoNormS0(24), seed=1)
    x = torch.randn(4, 24, 3, 5)
    full = layer(x)
    for b in range(4):
        single = layer(x[b:b + 1])
        torch.testing.assert_close(single, full[b:b + 1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(single.to(F64), evonorm_s0_reference(x[b:b + 1], layer.weight, layer.bias,
                                                                        layer.v, 8), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [24, 16, 64])
def test_evonorm_matches_timm(channels):
    from timm.layers import EvoNorm2dS0

    torch.manual_seed(2)
    ours = _randomise(EvoNormS0(channels), seed=3)
    theirs = EvoNorm2dS0(channels, groups=ours.groups)
    assert theirs.eps == ours.eps
    theirs.load_state_dict(ours.state_dict())  # same names: weight, bias, v
    x = torch.randn(2, channels, 6, 5) * 3
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    xs = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(xs), theirs(xs), rtol=1e-6, atol=1e-6)


def test_evonorm_channels_last_gives_the_same_result():
    torch.manual_seed(4)
    layer = _randomise(EvoNormS0(24), seed=4)
    x = torch.randn(2, 24, 5, 7)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), layer(x),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_evonorm_low_precision_values_close_to_fp32(dtype):
    torch.manual_seed(5)
    layer = _randomise(EvoNormS0(32), seed=5)
    x = torch.randn(2, 32, 6, 6)
    out = layer(x.to(dtype))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), layer(x.to(dtype).float()), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_evonorm_keeps_low_precision_dtype(dtype):
    """Under autocast the next conv expects the input dtype: fp32 parameters must not promote the output."""
    out = EvoNormS0(16)(torch.randn(1, 16, 4, 4, dtype=dtype))
    assert out.dtype == dtype


def test_evonorm_gradients_match_reference():
    torch.manual_seed(6)
    layer = _randomise(EvoNormS0(16), seed=6)
    x = torch.randn(2, 16, 4, 3, requires_grad=True)
    grad_out = torch.randn(2, 16, 4, 3)
    (layer(x) * grad_out).sum().backward()

    x64 = x.detach().to(F64).requires_grad_()
    params64 = [p.detach().to(F64).requires_grad_() for p in (layer.weight, layer.bias, layer.v)]

    def reference(x_, gamma, beta, v):  # differentiable, vectorised by einsum over an explicit group one-hot
        groups = 16
        onehot = torch.zeros(16, groups, dtype=F64)
        onehot[torch.arange(16), torch.arange(16) // (16 // groups)] = 1
        count = (16 // groups) * x_.shape[2] * x_.shape[3]
        mean = torch.einsum("bchw,cg->bg", x_, onehot) / count
        centred = x_ - torch.einsum("bg,cg->bc", mean, onehot)[..., None, None]
        var = torch.einsum("bchw,bchw,cg->bg", centred, centred, onehot) / count
        std = torch.einsum("bg,cg->bc", (var + 1e-5).sqrt(), onehot)[..., None, None]
        gate = 1.0 / (1.0 + torch.exp(-v[:, None, None] * x_))
        return x_ * gate / std * gamma[:, None, None] + beta[:, None, None]

    (reference(x64, *params64) * grad_out.to(F64)).sum().backward()
    torch.testing.assert_close(x.grad.to(F64), x64.grad, rtol=1e-4, atol=1e-5)
    for param, ref in zip((layer.weight, layer.bias, layer.v), params64):
        torch.testing.assert_close(param.grad.to(F64), ref.grad, rtol=1e-4, atol=1e-5)


def test_evonorm_gradcheck_float64():
    """Statistics are computed in max(x.dtype, float32): a float64 layer is float64-accurate (gradcheck)."""
    torch.manual_seed(7)
    layer = _randomise(EvoNormS0(4, groups=2), seed=7).double()
    x = torch.randn(2, 4, 3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["EvoNormS0", "evo_norm_s0"])
def test_norm_act_applies_no_activation_after_evonorm(name):
    torch.manual_seed(8)
    assert norm_includes_activation(name)
    block = NormAct(name, 32, "relu")
    assert isinstance(block.norm, EvoNormS0) and isinstance(block.act, nn.Identity)
    x = torch.randn(2, 32, 4, 4)
    out = block(x)
    assert (out < 0).any()  # x * sigmoid(x) is negative for x < 0: no ReLU applied
    torch.testing.assert_close(out, block.norm(x))


def test_norm_act_applies_relu_after_gn():
    torch.manual_seed(9)
    assert not norm_includes_activation("GN")
    block = NormAct("GN", 32, "relu")
    x = torch.randn(2, 32, 4, 4)
    out = block(x)
    assert (out >= 0).all() and (out == 0).any()
    torch.testing.assert_close(out, F.relu(F.group_norm(x, 32, eps=1e-5)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ spectral norm (SN)


def _l2norm(t):
    return t / torch.sqrt((t * t).sum())


def tf_kernel(weight):
    """PyTorch [Cout, Cin, kh, kw] -> the original's TF matrix [kh*kw*Cin, Cout]."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])


def tf_power_iteration(weight, u):
    """The original's step in its own layout: v = l2norm(u W^T), u' = l2norm(v W), sigma = v W u'^T,
    with u' and v constants for the gradient. Returns (sigma [scalar, differentiable in weight], u' [Cout])."""
    w_tf = tf_kernel(weight.to(F64))  # [k*k*Cin, Cout]
    with torch.no_grad():
        v = _l2norm(u.to(F64)[None] @ w_tf.T)  # [1, k*k*Cin]
        u_new = _l2norm(v @ w_tf)  # [1, Cout]
    sigma = (v @ w_tf @ u_new.T)[0, 0]
    return sigma, u_new[0]


def sn_reference(y, weight, u, gamma, beta):
    sigma, u_new = tf_power_iteration(weight, u)
    out = y.to(F64) * (gamma.to(F64) / sigma)[:, None, None] + beta.to(F64)[:, None, None]
    return out, sigma, u_new


def test_sn_init():
    layer = SpectralNorm2d(12)
    assert torch.equal(layer.weight, torch.ones(12)) and torch.equal(layer.bias, torch.ones(12))  # beta init 1
    assert layer.u.shape == (12,)
    torch.testing.assert_close(layer.u.norm(), torch.tensor(1.0))
    assert layer.takes_conv_weight
    assert {"u", "sigma"} <= set(layer.state_dict())
    assert not any(name in ("u", "sigma") for name, _ in layer.named_parameters())


@pytest.mark.parametrize("random_params", [False, True])
def test_sn_training_step_matches_tf_layout_reference(random_params):
    torch.manual_seed(10)
    cin, cout = 5, 8
    weight = torch.randn(cout, cin, 3, 3) * 0.2
    layer = SpectralNorm2d(cout).train()
    if random_params:
        _randomise(layer, seed=10)
    x = torch.randn(2, cin, 7, 6)
    y = F.conv2d(x, weight, padding=1)
    for _ in range(3):  # several steps: u is carried over
        u0 = layer.u.clone()
        out = layer(y, weight)
        expected, sigma, u_new = sn_reference(y, weight, u0, layer.weight.detach(), layer.bias.detach())
        torch.testing.assert_close(layer.sigma.to(F64), sigma, rtol=1e-5, atol=0)
        torch.testing.assert_close(layer.u.to(F64), u_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.to(F64), expected, rtol=1e-5, atol=1e-5)


def test_sn_gradients_flow_through_sigma_with_u_and_v_constant():
    torch.manual_seed(11)
    cin, cout = 4, 6
    layer = _randomise(SpectralNorm2d(cout), seed=11).train()
    u0 = layer.u.clone()
    weight = (torch.randn(cout, cin, 3, 3) * 0.3).requires_grad_()
    x = torch.randn(2, cin, 5, 5)
    grad_out = torch.randn(2, cout, 5, 5)
    (layer(F.conv2d(x, weight, padding=1), weight) * grad_out).sum().backward()

    w64 = weight.detach().to(F64).requires_grad_()
    gamma64, beta64 = (p.detach().to(F64).requires_grad_() for p in (layer.weight, layer.bias))
    out64, _, _ = sn_reference(F.conv2d(x.to(F64), w64, padding=1), w64, u0, gamma64, beta64)
    (out64 * grad_out.to(F64)).sum().backward()
    torch.testing.assert_close(weight.grad.to(F64), w64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad.to(F64), gamma64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad.to(F64), beta64.grad, rtol=1e-5, atol=1e-6)


def test_sn_weight_grad_through_sigma_is_rank_one_in_u_and_v():
    """With the conv output detached, dL/dW = dL/dsigma * v^T u' (TF layout): the outer product of the
    constant power-iteration vectors, nothing through u' or v themselves."""
    torch.manual_seed(12)
    cin, cout = 3, 5
    layer = _randomise(SpectralNorm2d(cout), seed=12).train()
    u0 = layer.u.clone()
    weight = torch.randn(cout, cin, 3, 3, requires_grad=True)
    y = torch.randn(2, cout, 4, 4)
    grad_out = torch.randn(2, cout, 4, 4)
    (layer(y, weight) * grad_out).sum().backward()

    w_tf = tf_kernel(weight.detach().to(F64))
    v = _l2norm(u0.to(F64)[None] @ w_tf.T)
    u_new = _l2norm(v @ w_tf)
    sigma = (v @ w_tf @ u_new.T)[0, 0]
    gamma = layer.weight.detach().to(F64)
    dl_dsigma = -(torch.einsum("bchw,bchw->c", grad_out.to(F64), y.to(F64)) * gamma).sum() / sigma**2
    grad_tf = dl_dsigma * v.T @ u_new  # [k*k*Cin, Cout]
    expected = grad_tf.reshape(3, 3, cin, cout).permute(3, 2, 0, 1)
    torch.testing.assert_close(weight.grad.to(F64), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sn_sigma_converges_to_the_spectral_norm(seed):
    torch.manual_seed(seed)
    weight = torch.randn(16, 8, 3, 3) * 0.1
    layer = SpectralNorm2d(16).train()
    y = torch.randn(1, 16, 2, 2)
    for _ in range(50):
        layer(y, weight)
    true_sigma = torch.linalg.matrix_norm(weight.to(F64).reshape(16, -1), ord=2)
    torch.testing.assert_close(layer.sigma.to(F64), true_sigma, rtol=1e-3, atol=0)
    u_top = torch.linalg.svd(weight.to(F64).reshape(16, -1)).U[:, 0]
    assert abs(float(layer.u.to(F64) @ u_top)) > 0.99


def test_sn_eval_uses_the_last_training_sigma_and_updates_nothing():
    torch.manual_seed(13)
    layer = _randomise(SpectralNorm2d(6), seed=13).train()
    weight = torch.randn(6, 4, 3, 3)
    y = torch.randn(2, 6, 3, 3)
    for _ in range(4):
        layer(y, weight)
    sigma, u = layer.sigma.clone(), layer.u.clone()
    assert not torch.isclose(sigma, torch.tensor(1.0))
    layer.eval()
    for other in (weight, weight * 3, torch.randn(6, 4, 3, 3)):  # the kernel no longer matters in eval
        out = layer(y, other)
        assert torch.equal(layer.sigma, sigma) and torch.equal(layer.u, u)
        expected = y * (layer.weight / sigma)[:, None, None] + layer.bias[:, None, None]
        torch.testing.assert_close(out, expected)


def test_sn_state_dict_persists_u_and_sigma():
    torch.manual_seed(14)
    weight = torch.randn(6, 4, 3, 3)
    y = torch.randn(2, 6, 3, 3)
    first = _randomise(SpectralNorm2d(6), seed=14).train()
    for _ in range(3):
        first(y, weight)
    state = first.state_dict()
    assert set(state) == {"weight", "bias", "u", "sigma"}
    resumed = SpectralNorm2d(6)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.u, first.u) and torch.equal(resumed.sigma, first.sigma)
    torch.testing.assert_close(resumed.eval()(y, weight), first.eval()(y, weight))
    first.train(), resumed.train()
    torch.testing.assert_close(resumed(y, weight), first(y, weight))  # the next training step resumes too
    assert torch.equal(resumed.u, first.u)


def test_conv_norm_act_sn_uses_its_own_conv_weight():
    torch.manual_seed(15)
    block = ConvNormAct(4, 8, 3, norm="SN", activation="relu").train()
    assert block.conv.bias is None
    sn = block.norm_act.norm
    assert isinstance(sn, SpectralNorm2d)
    _randomise(sn, seed=15)
    u0 = sn.u.clone()
    x = torch.randn(2, 4, 9, 9)
    out = block(x)
    y = F.conv2d(x.to(F64), block.conv.weight.detach().to(F64), padding=1)
    expected, _sigma, u_new = sn_reference(y, block.conv.weight.detach(), u0, sn.weight.detach(), sn.bias.detach())
    torch.testing.assert_close(out.to(F64), F.relu(expected), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sn.u.to(F64), u_new, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_conv_before_any_norm_has_no_bias(norm):
    assert ConvNormAct(8, 32, 3, norm=norm).conv.bias is None
    assert ConvNormAct(8, 32, 3, norm="").conv.bias is not None


def test_sn_channel_mismatch_raises():
    layer = SpectralNorm2d(8)
    with pytest.raises(ValueError, match="8"):
        layer(torch.randn(1, 8, 4, 4), torch.randn(6, 3, 3, 3))
    block = NormAct("SN", 6, "relu")
    with pytest.raises(ValueError):
        block(torch.randn(1, 6, 4, 4), torch.randn(8, 3, 3, 3))


def test_sn_batch_1_and_bf16():
    torch.manual_seed(16)
    layer = SpectralNorm2d(8).train()
    weight = torch.randn(8, 4, 3, 3)
    y = torch.randn(1, 8, 3, 3)
    out = layer(y, weight)
    assert out.shape == (1, 8, 3, 3) and torch.isfinite(out).all()
    layer.eval()
    low = layer(y.bfloat16(), weight)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), layer(y, weight), rtol=2e-2, atol=2e-2)


def test_sn_gradcheck_float64():
    """``SpectralNorm2d.double()`` trains in float64 (the power iteration runs in the kernel's precision).

    gradcheck is w.r.t. the conv output only: a numerical derivative w.r.t. the kernel would also move u' and
    v, which the layer (like the original) holds constant; the kernel gradient is checked against autograd of
    the TF-layout reference above instead."""
    torch.manual_seed(17)
    layer = _randomise(SpectralNorm2d(3), seed=17).double().train()
    u0 = layer.u.clone()
    weight = torch.randn(3, 2, 3, 3, dtype=F64)

    def fn(y):
        layer.u.copy_(u0)  # gradcheck calls many times; each call must start from the same u
        return layer(y, weight)

    y = torch.randn(2, 3, 2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (y,), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------- SwitchNorm


def switch_norm_reference(x, gamma, beta, mean_logits, var_logits, eps=1e-5, running=None):
    """Paper formulas with every variance computed directly as a centred (biased) mean; ``running`` =
    (mean, var) replaces the BN statistics (eval)."""
    x = x.to(F64)
    batch, channels, height, width = x.shape
    hw = height * width
    mu_in = torch.einsum("bchw->bc", x) / hw
    var_in = torch.einsum("bchw->bc", (x - mu_in[..., None, None]) ** 2) / hw
    mu_ln = torch.einsum("bchw->b", x) / (channels * hw)
    var_ln = torch.einsum("bchw->b", (x - mu_ln[:, None, None, None]) ** 2) / (channels * hw)
    if running is None:
        mu_bn = torch.einsum("bchw->c", x) / (batch * hw)
        var_bn = torch.einsum("bchw->c", (x - mu_bn[:, None, None]) ** 2) / (batch * hw)
    else:
        mu_bn, var_bn = (t.to(F64) for t in running)
    wm = torch.exp(mean_logits.to(F64)) / torch.exp(mean_logits.to(F64)).sum()
    wv = torch.exp(var_logits.to(F64)) / torch.exp(var_logits.to(F64)).sum()
    out = torch.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            mu = wm[0] * mu_in[b, c] + wm[1] * mu_ln[b] + wm[2] * mu_bn[c]
            var = wv[0] * var_in[b, c] + wv[1] * var_ln[b] + wv[2] * var_bn[c]
            out[b, c] = (x[b, c] - mu) / torch.sqrt(var + eps) * gamma[c].to(F64) + beta[c].to(F64)
    return out


def _switch(channels, mean_logits=None, var_logits=None, seed=0):
    layer = _randomise(SwitchNorm2d(channels), seed=seed)
    with torch.no_grad():
        if mean_logits is not None:
            layer.mean_weight.copy_(torch.tensor(mean_logits))
            layer.var_weight.copy_(torch.tensor(var_logits))
    return layer


def test_switch_norm_init():
    layer = SwitchNorm2d(16)
    assert torch.equal(layer.weight, torch.ones(16)) and torch.equal(layer.bias, torch.zeros(16))
    assert torch.equal(layer.mean_weight.softmax(0), torch.full((3,), 1 / 3))
    assert torch.equal(layer.var_weight.softmax(0), torch.full((3,), 1 / 3))
    assert layer.momentum == 0.997 and layer.eps == 1e-5
    assert torch.equal(layer.running_mean, torch.zeros(16)) and torch.equal(layer.running_var, torch.ones(16))


@pytest.mark.parametrize("seed", [0, 1])
def test_switch_norm_train_matches_reference_with_random_mixing(seed):
    torch.manual_seed(seed)
    layer = _switch(12, seed=seed).train()  # random mixing logits, gamma, beta
    x = torch.randn(3, 12, 5, 4) * 2 + torch.randn(1, 12, 1, 1)
    expected = switch_norm_reference(x, layer.weight.detach(), layer.bias.detach(), layer.mean_weight.detach(),
                                     layer.var_weight.detach())
    torch.testing.assert_close(layer(x).to(F64), expected, rtol=1e-5, atol=1e-5)


BIG = 40.0


def test_switch_norm_instance_limit_is_instance_norm():
    torch.manual_seed(20)
    layer = _switch(8, [BIG, 0, 0], [BIG, 0, 0], seed=20)
    x = torch.randn(2, 8, 6, 5) * 3 + 1
    expected = F.instance_norm(x, weight=layer.weight, bias=layer.bias, eps=1e-5)
    torch.testing.assert_close(layer.train()(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_switch_norm_layer_limit_is_group_norm_1():
    torch.manual_seed(21)
    layer = _switch(8, [0, BIG, 0], [0, BIG, 0], seed=21)
    x = torch.randn(2, 8, 6, 5) * 3 + torch.randn(1, 8, 1, 1)
    expected = F.group_norm(x, 1, weight=layer.weight, bias=layer.bias, eps=1e-5)
    torch.testing.assert_close(layer.train()(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_switch_norm_batch_limit_is_batch_norm():
    torch.manual_seed(22)
    layer = _switch(8, [0, 0, BIG], [0, 0, BIG], seed=22).train()
    x = torch.randn(4, 8, 6, 5) * 3 + torch.randn(1, 8, 1, 1)
    expected = F.batch_norm(x, None, None, weight=layer.weight, bias=layer.bias, training=True, eps=1e-5)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer.eval()
    expected_eval = F.batch_norm(x, layer.running_mean, layer.running_var, weight=layer.weight, bias=layer.bias,
                                 training=False, eps=1e-5)
    torch.testing.assert_close(layer(x), expected_eval, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset, tol", [(1e3, 1e-3), (1e4, 1e-2)])  # fp32 F.group_norm: 1.3e-5, 4e-4 off
def test_switch_norm_is_stable_under_a_large_common_offset(offset, tol):
    """The paper's code takes var_ln and var_bn as E[x^2] - E[x]^2 of fp32 moments, which a common offset much
    larger than the spread cancels catastrophically (at offset 1e3, std 1, the LN limit was off from
    group_norm(x, 1) by ~0.26; at 1e4 the output was NaN). od2 uses the law of total variance,
    var_ln = mean_C(var_in) + mean_C((mu_in - mu_ln)^2), and likewise over B for var_bn."""
    torch.manual_seed(29)
    layer = _switch(8, [0, BIG, 0], [0, BIG, 0], seed=29).train()
    x = torch.randn(2, 8, 16, 16) + offset
    expected = F.group_norm(x.to(F64), 1, weight=layer.weight.to(F64), bias=layer.bias.to(F64), eps=1e-5)
    out = layer(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.to(F64), expected, rtol=tol, atol=tol)


def test_switch_norm_running_statistics_and_eval():
    torch.manual_seed(23)
    layer = _switch(6, seed=23).train()
    xs = [torch.randn(3, 6, 4, 5) * 2 + 1.5, torch.randn(3, 6, 4, 5) * 0.5 - 1]
    run_mean, run_var = torch.zeros(6, dtype=F64), torch.ones(6, dtype=F64)
    for x in xs:
        layer(x)
        x64 = x.to(F64)
        batch_mean = x64.permute(1, 0, 2, 3).reshape(6, -1).mean(1)
        batch_var = x64.permute(1, 0, 2, 3).reshape(6, -1).var(1, unbiased=False)  # biased, as BN's normaliser
        run_mean = 0.997 * run_mean + 0.003 * batch_mean
        run_var = 0.997 * run_var + 0.003 * batch_var
    torch.testing.assert_close(layer.running_mean.to(F64), run_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.running_var.to(F64), run_var, rtol=1e-5, atol=1e-6)

    layer.eval()
    x = torch.randn(2, 6, 3, 3)
    before = (layer.running_mean.clone(), layer.running_var.clone())
    out = layer(x)
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])
    expected = switch_norm_reference(x, layer.weight.detach(), layer.bias.detach(), layer.mean_weight.detach(),
                                     layer.var_weight.detach(), running=(run_mean, run_var))
    torch.testing.assert_close(out.to(F64), expected, rtol=1e-5, atol=1e-5)
    # eval is per sample: a sample alone gives the same output
    torch.testing.assert_close(layer(x[1:]), out[1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spatial", [(1, 1), (4, 3)])
def test_switch_norm_batch_1_train_is_finite(spatial):
    torch.manual_seed(24)
    layer = _switch(8, seed=24).train()
    x = torch.randn(1, 8, *spatial)
    out = layer(x)
    assert torch.isfinite(out).all()
    assert torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()
    expected = switch_norm_reference(x, layer.weight.detach(), layer.bias.detach(), layer.mean_weight.detach(),
                                     layer.var_weight.detach())
    torch.testing.assert_close(out.to(F64), expected, rtol=1e-4, atol=1e-4)


def test_switch_norm_gradients_match_reference():
    torch.manual_seed(25)
    layer = _switch(6, seed=25).train()
    x = torch.randn(2, 6, 3, 4, requires_grad=True)
    grad_out = torch.randn(2, 6, 3, 4)
    (layer(x) * grad_out).sum().backward()
    x64 = x.detach().to(F64).requires_grad_()
    params = [p.detach().to(F64).requires_grad_()
              for p in (layer.weight, layer.bias, layer.mean_weight, layer.var_weight)]
    (switch_norm_reference(x64, *params) * grad_out.to(F64)).sum().backward()
    torch.testing.assert_close(x.grad.to(F64), x64.grad, rtol=1e-4, atol=1e-5)
    for param, ref in zip((layer.weight, layer.bias, layer.mean_weight, layer.var_weight), params):
        torch.testing.assert_close(param.grad.to(F64), ref.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_switch_norm_gradcheck_float64(training):
    """A float64 SwitchNorm2d computes and updates its statistics in float64, in training and in eval."""
    torch.manual_seed(26)
    layer = _switch(4, seed=26).double().train(training)
    x = torch.randn(2, 4, 3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


def test_switch_norm_channels_last_gives_the_same_result():
    torch.manual_seed(27)
    a, b = _switch(8, seed=27).train(), _switch(8, seed=27).train()
    x = torch.randn(3, 8, 5, 6)
    torch.testing.assert_close(a(x.contiguous(memory_format=torch.channels_last)), b(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.running_var, b.running_var)


def test_switch_norm_bf16_input():
    torch.manual_seed(28)
    layer = _switch(8, seed=28).train()
    x = torch.randn(2, 8, 5, 5)
    low = layer(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), layer(x.bfloat16().float()), rtol=2e-2, atol=3e-2)


# --------------------------------------------------------------------------------------------------- factory

EXPECTED_CLASS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": SyncBatchNorm2d,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": nn.GroupNorm,
    "GNV0": nn.GroupNorm,
    "EvoNormS0": EvoNormS0,
    "evo_norm_s0": EvoNormS0,
    "SN": SpectralNorm2d,
    "SpectralNorm": SpectralNorm2d,
    "SwitchNorm": SwitchNorm2d,
}


def test_norms_registry_is_the_expected_set():
    assert set(NORMS) == set(EXPECTED_CLASS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASS))
def test_get_norm_builds_the_right_class(name):
    layer = get_norm(name, 64)
    assert type(layer) is EXPECTED_CLASS[name]
    assert is_norm_module(layer)
    assert not norm_uses_bias(name)
    assert norm_includes_activation(name) == (EXPECTED_CLASS[name] is EvoNormS0)
    out = layer(torch.randn(2, 64, 3, 3), torch.randn(64, 8, 3, 3)) if name in ("SN", "SpectralNorm") \
        else layer(torch.randn(2, 64, 3, 3))
    assert out.shape == (2, 64, 3, 3)


def test_gnv0_is_gn():
    for channels, groups in ((256, 32), (24, 8)):
        gn, gnv0 = get_norm("GN", channels), get_norm("GNV0", channels)
        assert gn.num_groups == gnv0.num_groups == groups and gn.eps == gnv0.eps == 1e-5
    x = torch.randn(2, 24, 4, 4)
    torch.testing.assert_close(get_norm("GNV0", 24)(x), get_norm("GN", 24)(x))


def test_get_norm_no_norm_and_unknown():
    assert get_norm("", 16) is None
    assert norm_uses_bias("")
    assert not norm_includes_activation("")
    with pytest.raises(ValueError) as info:
        get_norm("BatchNorm", 16)
    message = str(info.value)
    assert "BatchNorm" in message
    for name in NORMS:
        assert repr(name) in message


@pytest.mark.parametrize("module", [nn.Conv2d(4, 4, 3), nn.Linear(4, 4), nn.ReLU(), nn.Identity(),
                                    nn.Sequential(nn.BatchNorm2d(4))])
def test_is_norm_module_rejects_non_norms(module):
    assert not is_norm_module(module)
