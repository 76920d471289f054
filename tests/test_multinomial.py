"""The fast engine's draw is torch.multinomial's: the same exponential noise from the same
generator words, the same tokens, the generator left where multinomial leaves it."""

from __future__ import annotations

import pytest
import torch

from rewardtune.sampling.fast import exponential_float32, multinomial_one

W1_SHAPE = (16, 49152)  # one decode step of the W1 benchmark: batch 16, SmolLM2's vocab


@pytest.mark.parametrize("shape", [W1_SHAPE, (3, 7), (1, 1), (5, 1000)])
def test_exponential_noise_is_exponential_bit_for_bit(shape):
    for seed in range(4):
        torch.manual_seed(seed)
        expected = [torch.empty(shape).exponential_() for _ in range(3)]
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        got = [exponential_float32(shape) for _ in range(3)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        assert torch.equal(torch.get_rng_state(), state)


def random_probs(shape, generator) -> torch.Tensor:
    """Sharp and flat rows, some with zeros (as top-k / top-p leave them)."""
    scales = torch.tensor([0.5, 3.0, 8.0])[torch.arange(shape[0]) % 3]
    logits = torch.randn(shape, generator=generator) * scales[:, None]
    logits[::2, ::3] = -torch.inf
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("shape", [W1_SHAPE, (4, 50), (7, 3)])
def test_tokens_and_generator_state_are_multinomials(shape):
    probs = random_probs(shape, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    expected = [torch.multinomial(probs, num_samples=1).squeeze(1) for _ in range(5)]
    state = torch.get_rng_state()
    torch.manual_seed(1)
    got = [multinomial_one(probs) for _ in range(5)]
    assert [t.tolist() for t in got] == [t.tolist() for t in expected]
    assert torch.equal(torch.get_rng_state(), state)
    assert len({tuple(t.tolist()) for t in got}) > 1  # the draws vary: the noise is used


def test_only_float32_cpu_contiguous_rows_take_the_fast_path(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "rewardtune.sampling.fast.exponential_float32",
        lambda shape: calls.append(shape) or torch.ones(shape),
    )
    probs = torch.softmax(torch.randn(3, 8, dtype=torch.float64), -1)
    multinomial_one(probs)
    multinomial_one(probs.float().t().contiguous().t())
    assert calls == []
    multinomial_one(probs.float())
    assert calls == [(3, 8)]


@pytest.mark.parametrize(
    "bad",
    [float("nan"), -0.5, float("inf")],
    ids=["nan", "negative", "inf"],
)
def test_invalid_probabilities_raise_as_multinomial_does(bad):
    probs = torch.full((2, 5), 0.2)
    probs[1, 2] = bad
    with pytest.raises(RuntimeError, match="probability tensor contains"):
        multinomial_one(probs)
    with pytest.raises(RuntimeError, match="invalid multinomial distribution"):
        multinomial_one(torch.zeros(2, 5))
