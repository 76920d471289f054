"""The advantage estimators of `core/advantages.py`, checked against numbers worked out by hand.

The running example: two prompts, three responses each (k = 3), consecutive in the batch.

    group A (prompt 0): scores 1, 2, 3     mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1
    group B (prompt 1): scores 0, 0, 6     mean 2, sample std sqrt((4 + 4 + 16) / 2) = 2 sqrt(3)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rewardtune.core import advantages as adv
from rewardtune.core import ppo
from rewardtune.core.tensors import masked_whiten

SCORES = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0], dtype=torch.float64)
SQRT3 = math.sqrt(3.0)


def test_rloo_judges_each_response_against_the_mean_of_the_other_two():
    # A: 1 - (2 + 3)/2 = -1.5;  2 - (1 + 3)/2 = 0;  3 - (1 + 2)/2 = 1.5
    # B: 0 - (0 + 6)/2 = -3;    0 - (0 + 6)/2 = -3; 6 - (0 + 0)/2 = 6
    expected = torch.tensor([-1.5, 0.0, 1.5, -3.0, -3.0, 6.0], dtype=torch.float64)
    assert_close(adv.rloo_advantages(SCORES, 3), expected)


def test_rloo_refuses_groups_of_one_and_batches_that_do_not_split():
    with pytest.raises(ValueError, match="at least 2"):
        adv.rloo_advantages(SCORES, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        adv.rloo_advantages(SCORES, 4)


def test_grpo_divides_each_group_by_its_own_sample_std():
    # A: (1 - 2)/1 = -1, 0, (3 - 2)/1 = 1
    # B: (0 - 2)/(2 sqrt 3) = -1/sqrt 3 twice, (6 - 2)/(2 sqrt 3) = 2/sqrt 3
    expected = torch.tensor(
        [-1.0, 0.0, 1.0, -1 / SQRT3, -1 / SQRT3, 2 / SQRT3], dtype=torch.float64
    )
    assert_close(adv.grpo_advantages(SCORES, 3), expected, rtol=1e-5, atol=1e-6)


def test_dr_grpo_only_subtracts_the_group_mean():
    # A: 1 - 2, 2 - 2, 3 - 2;  B: 0 - 2, 0 - 2, 6 - 2
    expected = torch.tensor([-1.0, 0.0, 1.0, -2.0, -2.0, 4.0], dtype=torch.float64)
    assert_close(adv.grpo_advantages(SCORES, 3, scale=False), expected)


def test_grpo_of_a_group_that_scores_alike_is_zero_not_nan():
    # mean 5, std 0: (5 - 5) / (0 + eps) = 0
    alike = torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)
    assert_close(adv.grpo_advantages(alike, 3), torch.zeros(3, dtype=torch.float64))


def test_discounted_returns_sum_the_rewards_still_to_come():
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.5, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # gamma 1: row 0: 0.1 - 0.2 + 1 = 0.9, -0.2 + 1 = 0.8, 1.0; row 1: 0.5 (the 9s are padding)
    assert_close(
        adv.discounted_returns(rewards, mask, 1.0),
        torch.tensor([[0.9, 0.8, 1.0], [0.5, 0.0, 0.0]], dtype=torch.float64),
    )
    # gamma 0.5: row 0: t2 = 1.0, t1 = -0.2 + 0.5 * 1.0 = 0.3, t0 = 0.1 + 0.5 * 0.3 = 0.25
    assert_close(
        adv.discounted_returns(rewards, mask, 0.5)[0], torch.tensor([0.25, 0.3, 1.0]).double()
    )


def test_reinforce_pp_whitens_the_returns_over_the_whole_batch():
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.5, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    advantages, returns = adv.reinforce_pp_advantages(rewards, mask, 1.0)
    # returns at real tokens 0.9, 0.8, 1.0, 0.5: mean 0.8; deviations 0.1, 0, 0.2, -0.3;
    # sample variance (0.01 + 0 + 0.04 + 0.09) / 3 = 0.14 / 3, std = 0.216025
    std = math.sqrt(0.14 / 3)
    expected = torch.tensor([[0.1 / std, 0.0, 0.2 / std], [-0.3 / std, 0.0, 0.0]])
    assert_close(advantages, expected.double(), rtol=1e-6, atol=1e-6)
    assert_close(returns[0], torch.tensor([0.9, 0.8, 1.0]).double())


# --- the dispatch step() calls ----------------------------------------------------------

# Two tokens per response; every real token has log pi - log pi_ref = 0.5, so a full response has sum KL = 1.0 and
# response 2 (score 3), whose second token is padding, has sum KL = 0.5.
MASK = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1], [1, 1]])
REF = torch.full((6, 2), -2.0, dtype=torch.float64)
LOGPROBS = REF + 0.5
VALUES = torch.zeros(6, 2, dtype=torch.float64)


def dispatch(name: str, **spec) -> adv.Advantages:
    estimator = adv.Estimator(name=name, samples_per_prompt=3, **spec)
    return adv.compute_advantages(estimator, SCORES, LOGPROBS, REF, VALUES, MASK, kl_coef=0.2)


def test_rloo_puts_the_kl_in_each_response_reward_before_the_baseline():
    out = dispatch("rloo")
    # response rewards: score - 0.2 * sum KL
    # A: 1 - 0.2 = 0.8, 2 - 0.2 = 1.8, 3 - 0.1 = 2.9;  B: -0.2, -0.2, 5.8
    # A: 0.8 - (1.8 + 2.9)/2 = -1.55; 1.8 - (0.8 + 2.9)/2 = -0.05; 2.9 - (0.8 + 1.8)/2 = 1.6
    # B: shifted alike, as without KL: -3, -3, 6
    per_response = torch.tensor([-1.55, -0.05, 1.6, -3.0, -3.0, 6.0], dtype=torch.float64)
    assert_close(out.advantages, per_response[:, None] * MASK)  # every real token, same value
    assert_close(out.returns[:3, 0], torch.tensor([0.8, 1.8, 2.9]).double())
    assert_close(out.non_score, -0.2 * 0.5 * MASK.double())  # -beta * KL_t per token


def test_grpo_with_the_kl_in_the_loss_normalises_the_bare_scores():
    out = dispatch("grpo", kl_in="loss")
    # no KL in the reward: the group-normalised scores of the first test
    expected = torch.tensor([-1.0, 0.0, 1.0, -1 / SQRT3, -1 / SQRT3, 2 / SQRT3]).double()
    assert_close(out.advantages, expected[:, None] * MASK, rtol=1e-5, atol=1e-6)
    assert_close(out.non_score, torch.zeros(6, 2, dtype=torch.float64))
    # the KL is still measured (objective/kl and the controller read it)
    assert_close(out.kl, 0.5 * MASK.double())


def test_reinforce_pp_keeps_the_per_token_kl_in_the_returns():
    out = dispatch("reinforce_pp")
    # response 0: rewards -0.1 at t0, 1 - 0.1 = 0.9 at t1 -> returns 0.8, 0.9
    assert_close(out.returns[0], torch.tensor([0.8, 0.9]).double())
    assert_close(out.advantages, masked_whiten(out.returns, MASK))


def test_gae_dispatch_is_todays_value_head_gae_whitened():
    out = dispatch("gae")
    rewards, _ = ppo.shape_rewards(SCORES, 0.5 * MASK.double(), 0.2, MASK)
    advantages, returns = ppo.gae(VALUES, rewards, MASK, 1.0, 0.95)
    assert_close(out.advantages, masked_whiten(advantages, MASK))
    assert_close(out.returns, returns)


def test_only_gae_uses_the_value_head():
    assert [adv.Estimator(name=n).uses_critic for n in adv.ESTIMATORS] == [
        True,
        False,
        False,
        False,
    ]


def test_kl_loss_is_k3_and_pulls_the_policy_back_to_the_reference():
    logprobs = torch.tensor([[math.log(0.5), 0.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[math.log(0.25), 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0]])
    loss = adv.kl_loss(logprobs, ref, mask)
    # x = log pi - log pi_ref = log 2: exp(-x) - 1 + x = 0.5 - 1 + 0.693147 = 0.193147
    assert loss.item() == pytest.approx(0.5 - 1 + math.log(2), rel=1e-9)
    loss.backward()
    # d/dx = 1 - exp(-x) = 0.5 > 0: lowering log pi lowers the loss; the padding gets nothing
    assert_close(logprobs.grad, torch.tensor([[0.5, 0.0]], dtype=torch.float64))
