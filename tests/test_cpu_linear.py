"""Dense layers on oneDNN (model.cpu_linear: onednn): the same numbers as torch's F.linear,
forward and backward, for nn.Linear and GPT-2's Conv1D, swapped in place without touching
parameters, state-dict keys or the peft wrapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rewardtune.config import ModelConfig
from rewardtune.models import cpu_linear, load_policy
from rewardtune.models.cpu_linear import OneDNNLinear, linear, use_onednn

pytestmark = pytest.mark.skipif(
    not cpu_linear.onednn_available(), reason="this PyTorch has no oneDNN linear"
)


def tensors(*shape, seed=0, grad=False, dtype=torch.float32):
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=rng).to(dtype).requires_grad_(grad)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 300), (2, 7, 300)], ids=["2d", "3d"])
def test_forward_and_all_gradients_match_f_linear(shape, bias):
    x, w = tensors(*shape, grad=True), tensors(129, 300, seed=1, grad=True)
    b = tensors(129, seed=2, grad=True) if bias else None
    grad_out = tensors(*shape[:-1], 129, seed=3)
    ours = linear(x, w, b)
    ours.backward(grad_out)
    mine = [t.grad.clone() for t in (x, w, b) if t is not None]
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    theirs = nn.functional.linear(x, w, b)
    theirs.backward(grad_out)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for got, want in zip(mine, [t.grad for t in (x, w, b) if t is not None], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_frozen_weight_gets_no_gradient_and_input_gradient_matches():
    x, w = tensors(4, 300, grad=True), tensors(200, 300, seed=1)
    linear(x, w, None).sum().backward()
    expected = torch.ones(4, 200) @ w
    assert w.grad is None
    torch.testing.assert_close(x.grad, expected, atol=1e-4, rtol=1e-5)


def test_bfloat16_runs_on_onednn_close_to_f_linear():
    x, w = tensors(8, 256, dtype=torch.bfloat16), tensors(64, 256, seed=1, dtype=torch.bfloat16)
    torch.testing.assert_close(
        linear(x, w, None).float(), nn.functional.linear(x, w).float(), atol=0.1, rtol=0.02
    )


def test_what_onednn_does_not_take_falls_back_to_f_linear_exactly(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_linear, "_onednn", lambda *a: calls.append(a))
    x, w = tensors(3, 16, dtype=torch.float64), tensors(8, 16, seed=1, dtype=torch.float64)
    assert torch.equal(linear(x, w, None), nn.functional.linear(x, w))  # float64
    x, w = x.half(), w.half()
    assert torch.equal(linear(x, w, None), nn.functional.linear(x, w))  # float16
    assert calls == []


def test_swap_keeps_parameters_keys_and_outputs_and_skips_small_layers():
    model = nn.Sequential(nn.Linear(300, 400), nn.ReLU(), nn.Linear(400, 2))
    keys = list(model.state_dict())
    ids = [id(p) for p in model.parameters()]
    x = tensors(6, 300)
    before = model(x)
    assert use_onednn(model, min_weights=1000) == 1  # 400 x 2 stays on torch
    assert type(model[0]) is OneDNNLinear and type(model[2]) is nn.Linear
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == ids
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_layers_off_the_cpu_are_not_swapped():
    """A GPU model keeps torch's own forward (``meta`` stands in for a CUDA device here)."""
    model = nn.Sequential(nn.Linear(300, 400), nn.Linear(400, 300, device="meta"))
    assert use_onednn(model, min_weights=0) == 1
    assert type(model[0]) is OneDNNLinear and type(model[1]) is nn.Linear


def test_gpt2_conv1d_layers_swap_and_give_the_same_logits(tiny_gpt2):
    plain = load_policy(ModelConfig(name=str(tiny_gpt2), cpu_linear="torch"))
    swapped = load_policy(ModelConfig(name=str(tiny_gpt2), cpu_linear="torch"))
    n_conv = sum(type(m).__name__ == "Conv1D" for m in swapped.module.modules())
    assert n_conv > 0
    assert use_onednn(swapped.module, min_weights=0) >= n_conv
    assert not any(type(m).__name__ == "Conv1D" for m in swapped.module.modules())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = plain.module.lm(input_ids=ids).logits
        got = swapped.module.lm(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_load_policy_swaps_by_default_and_not_with_cpu_linear_torch(tiny_llama, monkeypatch):
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 0)  # the tiny layers are all below it
    on = load_policy(ModelConfig(name=str(tiny_llama)))
    off = load_policy(ModelConfig(name=str(tiny_llama), cpu_linear="torch"))
    lora_base = on.module.lm.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(lora_base) is OneDNNLinear
    assert not any(isinstance(m, OneDNNLinear) for m in off.module.modules())
    assert list(on.module.state_dict()) == list(off.module.state_dict())


def test_a_lora_update_through_onednn_gives_the_gradients_of_torch(tiny_llama):
    policies = []
    for _ in "ab":
        torch.manual_seed(0)  # the same LoRA A in both
        policies.append(load_policy(ModelConfig(name=str(tiny_llama), cpu_linear="torch")))
    use_onednn(policies[1].module, min_weights=0)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    grads = []
    for policy in policies:
        with torch.no_grad():  # a non-zero adapter, the same in both
            for name, p in policy.module.lm.named_parameters():
                if "lora_B" in name:
                    p.fill_(0.05)
        policy.module.eval()  # no LoRA dropout (the update runs in eval mode too)
        logits = policy.module.lm(input_ids=ids).logits[0, :-1]
        logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).sum().backward()  # log pi(next)
        grads.append({n: p.grad for n, p in policy.module.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, want in grads[0].items():  # float32 rounding differs, nothing more
        assert (grads[1][name] - want).norm() <= 1e-5 * want.norm(), name
