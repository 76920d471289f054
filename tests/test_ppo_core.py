"""The PPO math of `ppo/ppo.py`, checked against numbers worked out by hand.

Every expected value carries its arithmetic in a comment; none is produced by a second
implementation of the same formula. Masks: 1 = real token; responses are right-padded.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rewardtune.core import ppo, tensors

LN2, LN3 = math.log(2.0), math.log(3.0)


def t(*rows, dtype=torch.float64) -> torch.Tensor:
    """t(1, 2) and t([1, 2]) are 1-D; t([1, 2], [3, 4]) is 2-D."""
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=dtype)


# --- masked reductions ---------------------------------------------------------------


def test_masked_mean_over_all_positions_ignores_masked_values():
    values = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = t([1, 1, 0], [1, 0, 0])
    # (1 + 2 + 4) / 3 = 7 / 3
    assert tensors.masked_mean(values, mask).item() == pytest.approx(7 / 3, rel=1e-12)


def test_masked_mean_excludes_a_huge_masked_value():
    values = t([1.0, 1000.0, 3.0])
    mask = t([1, 0, 1])
    # (1 + 3) / 2 = 2; the 1000 is padding
    assert tensors.masked_mean(values, mask).item() == pytest.approx(2.0, rel=1e-12)


def test_masked_mean_along_dim_averages_each_row_and_column_separately():
    values = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = t([1, 1, 0], [1, 0, 0])
    # rows: (1 + 2) / 2 = 1.5; 4 / 1 = 4
    assert_close(tensors.masked_mean(values, mask, dim=1), t(1.5, 4.0))
    # columns: (1 + 4) / 2 = 2.5; 2 / 1 = 2; nothing real / max(0, 1) = 0
    assert_close(tensors.masked_mean(values, mask, dim=0), t(2.5, 2.0, 0.0))


def test_masked_mean_of_an_all_padding_row_is_zero_not_nan():
    values = t([7.0, 8.0])
    # 0 / clamp(0, min=1) = 0
    assert tensors.masked_mean(values, t([0, 0])).item() == 0.0


def test_masked_var_is_bessel_corrected_by_default():
    values = t([1.0, 2.0, 3.0, 100.0])
    mask = t([1, 1, 1, 0])
    # mean = (1 + 2 + 3) / 3 = 2; squared deviations 1, 0, 1 -> sum 2; unbiased 2 / (3 - 1) = 1
    assert tensors.masked_var(values, mask).item() == pytest.approx(1.0, rel=1e-12)


def test_masked_var_biased_divides_by_the_count():
    values = t([1.0, 2.0, 3.0, 100.0])
    mask = t([1, 1, 1, 0])
    # squared deviations sum to 2 (see above); biased 2 / 3
    assert tensors.masked_var(values, mask, unbiased=False).item() == pytest.approx(
        2 / 3, rel=1e-12
    )


def test_masked_var_accepts_a_bool_mask():
    values = t([2.0, 4.0, 6.0, -50.0])
    mask = torch.tensor([True, True, True, False])
    # mean 4; deviations 4, 0, 4 -> sum 8; unbiased 8 / 2 = 4
    assert tensors.masked_var(values, mask).item() == pytest.approx(4.0, rel=1e-12)


def test_masked_whiten_gives_hand_computed_values_and_zero_on_padding():
    values = t([1.0, 2.0, 3.0, 100.0])
    mask = t([1, 1, 1, 0])
    # mean 2, unbiased var 1 -> (x - 2) / 1 = -1, 0, 1; padding -> 0
    assert_close(tensors.masked_whiten(values, mask), t(-1.0, 0.0, 1.0, 0.0))


def test_masked_whiten_has_mean_zero_and_std_one_on_real_tokens():
    values = t([2.0, 4.0, 6.0, 8.0, 123.0], [5.0, 5.0, -7.0, 9.0, 9.0])
    mask = t([1, 1, 1, 1, 0], [1, 1, 0, 0, 0])
    whitened = tensors.masked_whiten(values, mask)
    real = whitened[mask.bool()]
    # real entries 2, 4, 6, 8, 5, 5: mean 30 / 6 = 5; deviations -3, -1, 1, 3, 0, 0;
    # unbiased var (9 + 1 + 1 + 9) / 5 = 4, std 2 -> -1.5, -0.5, 0.5, 1.5, 0, 0
    assert_close(real, t(-1.5, -0.5, 0.5, 1.5, 0.0, 0.0))
    assert real.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert real.std().item() == pytest.approx(1.0, rel=1e-8)  # torch.std is unbiased
    assert whitened[~mask.bool()].abs().sum().item() == 0.0


def test_masked_whiten_without_shift_mean_keeps_the_mean():
    values = t([1.0, 2.0, 3.0, 100.0])
    mask = t([1, 1, 1, 0])
    # whitened -1, 0, 1 plus the mean 2 -> 1, 2, 3 (mean still 2); padding still 0
    assert_close(tensors.masked_whiten(values, mask, shift_mean=False), t(1.0, 2.0, 3.0, 0.0))


# --- log-probabilities and entropy ---------------------------------------------------


def test_logprobs_from_logits_matches_hand_log_sum_exp():
    # exp of [0, ln 2, ln 3] is [1, 2, 3], sum 6 -> probabilities 1/6, 2/6, 3/6
    row = [0.0, LN2, LN3]
    # second sequence: [5, 5, 5] is uniform -> 1/3 for every token
    logits = torch.tensor([[row, row, row], [[5.0] * 3] * 3])
    labels = torch.tensor([[0, 1, 2], [1, 2, 0]])
    expected = torch.tensor(
        [[math.log(1 / 6), math.log(2 / 6), math.log(3 / 6)], [math.log(1 / 3)] * 3]
    )
    assert_close(tensors.logprobs_from_logits(logits, labels), expected)


def test_logprobs_from_logits_equals_log_softmax_gather_on_random_input():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator) * 4
    labels = torch.randint(0, 11, (3, 5), generator=generator)
    reference = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert_close(tensors.logprobs_from_logits(logits, labels), reference)


def test_logprobs_from_logits_at_a_temperature_are_those_of_the_tempered_softmax():
    # at T = 2, logits [0, 2 ln 3] act as [0, ln 3]: probabilities 1/4 and 3/4 (at T = 1: 1/10, 9/10)
    logits = torch.tensor([[[0.0, 2 * LN3], [0.0, 2 * LN3]]])
    labels = torch.tensor([[0, 1]])
    expected = torch.tensor([[math.log(1 / 4), math.log(3 / 4)]])
    assert_close(tensors.logprobs_from_logits(logits, labels, 2.0), expected)
    at_one = torch.tensor([[math.log(1 / 10), math.log(9 / 10)]])
    assert_close(tensors.logprobs_from_logits(logits, labels), at_one)


# --- KL: estimators and controllers --------------------------------------------------

# log pi = ln 0.5, ln 0.25, ln 0.5 and log pi_ref = ln 0.25, ln 0.5, ln 0.5
# -> log_ratio = log pi - log pi_ref = ln 2, -ln 2, 0 (checks the subtraction order)
KL_LOGPROBS = t([math.log(0.5), math.log(0.25), math.log(0.5)])
KL_REF_LOGPROBS = t([math.log(0.25), math.log(0.5), math.log(0.5)])


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        # k1: the log-ratio itself
        ("kl", [LN2, -LN2, 0.0]),
        # |log_ratio|
        ("abs", [LN2, LN2, 0.0]),
        # 0.5 * (ln 2)^2 = 0.5 * 0.480453 = 0.240227 (same for -ln 2)
        ("mse", [0.5 * LN2**2, 0.5 * LN2**2, 0.0]),
        # k3 = exp(-r) - 1 + r:  r = ln 2 -> 0.5 - 1 + 0.693147 = 0.193147
        #                        r = -ln 2 -> 2 - 1 - 0.693147 = 0.306853;  r = 0 -> 0
        ("low_var", [0.5 - 1 + LN2, 2 - 1 - LN2, 0.0]),
    ],
)
def test_kl_penalty_estimators_match_hand_values(estimator, expected):
    result = ppo.kl_penalty(KL_LOGPROBS, KL_REF_LOGPROBS, estimator)
    assert_close(result, t(*expected))


def test_kl_penalty_hand_values_written_out_numerically():
    mse = ppo.kl_penalty(KL_LOGPROBS, KL_REF_LOGPROBS, "mse")
    low_var = ppo.kl_penalty(KL_LOGPROBS, KL_REF_LOGPROBS, "low_var")
    assert mse[0].item() == pytest.approx(0.2402265, abs=1e-7)  # 0.5 * 0.6931472^2
    assert low_var[0].item() == pytest.approx(0.1931472, abs=1e-7)  # 0.5 - 1 + 0.6931472
    assert low_var[1].item() == pytest.approx(0.3068528, abs=1e-7)  # 2 - 1 - 0.6931472


def test_low_var_kl_is_non_negative_and_bounded_on_random_log_ratios():
    generator = torch.Generator().manual_seed(1)
    logprobs = torch.randn(4, 9, generator=generator) * 3
    ref_logprobs = torch.randn(4, 9, generator=generator) * 3
    k3 = ppo.kl_penalty(logprobs, ref_logprobs, "low_var")
    assert (k3 >= 0).all()
    assert (k3 <= 10).all()


def test_low_var_kl_is_clamped_when_the_policy_drifts_far():
    # r = -30: -r clamped to 20 -> exp(20) - 1 - 20 ~ 4.85e8, then clamped to 10
    k3 = ppo.kl_penalty(t([-30.0]), t([0.0]), "low_var")
    assert k3.item() == 10.0


def test_kl_penalty_rejects_an_unknown_estimator():
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_penalty(KL_LOGPROBS, KL_REF_LOGPROBS, "k2")


def test_adaptive_kl_update_clips_the_error_above_at_plus_0_2():
    # 9 / 6 - 1 = 0.5 -> clipped to 0.2; 0.2 * (1 + 0.2 * 16 / 10000) = 0.2 * 1.00032 = 0.200064
    new = ppo.adaptive_kl_update(0.2, current_kl=9.0, target_kl=6.0, n_steps=16, horizon=10000)
    assert new == pytest.approx(0.200064, rel=1e-12)


def test_adaptive_kl_update_clips_the_error_below_at_minus_0_2():
    # 3 / 6 - 1 = -0.5 -> clipped to -0.2; 0.2 * (1 - 0.2 * 16 / 10000) = 0.2 * 0.99968 = 0.199936
    new = ppo.adaptive_kl_update(0.2, current_kl=3.0, target_kl=6.0, n_steps=16, horizon=10000)
    assert new == pytest.approx(0.199936, rel=1e-12)


def test_adaptive_kl_update_uses_the_unclipped_error_inside_the_band():
    # 6.6 / 6 - 1 = 0.1 (inside +-0.2); 0.2 * (1 + 0.1 * 16 / 10000) = 0.2 * 1.00016 = 0.200032
    new = ppo.adaptive_kl_update(0.2, current_kl=6.6, target_kl=6.0, n_steps=16, horizon=10000)
    assert new == pytest.approx(0.200032, rel=1e-12)
    # on target: error 0 -> beta unchanged
    assert ppo.adaptive_kl_update(0.2, 6.0, 6.0, 16, 10000) == pytest.approx(0.2, rel=1e-15)


def test_scale_scores_scales_then_clips_symmetrically():
    scores = t(1.0, -3.0, 0.5)
    # * 2 -> 2, -6, 1; clip to [-4, 4] -> 2, -4, 1
    assert_close(ppo.scale_scores(scores, 2.0, 4.0), t(2.0, -4.0, 1.0))
    # clip 1.5 -> 1.5, -1.5, 1
    assert_close(ppo.scale_scores(scores, 2.0, 1.5), t(1.5, -1.5, 1.0))


def test_scale_scores_without_clip_only_scales():
    # * 2 -> 2, -6, 1
    assert_close(ppo.scale_scores(t(1.0, -3.0, 0.5), 2.0, None), t(2.0, -6.0, 1.0))


def test_shape_rewards_adds_score_at_last_real_token_of_right_padded_responses():
    scores = t(1.0, 2.0, 3.0)
    # KL on padding (9, 7, 7) must not leak into the rewards
    kl = t([0.5, 1.0, 2.0, 9.0], [1.0, 7.0, 7.0, 7.0], [0.0, 0.0, 0.0, 0.0])
    mask = t([1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1])
    rewards, non_score = ppo.shape_rewards(scores, kl, kl_coef=0.1, mask=mask)
    # non-score = -0.1 * kl on real tokens: -0.05, -0.1, -0.2 | -0.1 | 0, 0, 0, 0
    assert_close(non_score, t([-0.05, -0.1, -0.2, 0.0], [-0.1, 0, 0, 0], [0.0, 0, 0, 0]))
    # score at the last real token: -0.2 + 1 = 0.8 (t=2); -0.1 + 2 = 1.9 (t=0); 0 + 3 = 3 (t=3)
    assert_close(rewards, t([-0.05, -0.1, 0.8, 0.0], [1.9, 0, 0, 0], [0.0, 0, 0, 3.0]))


def test_gae_matches_hand_computed_two_step_episode():
    values, rewards, mask = t([[0.5, 0.8]]), t([[0.0, 1.0]]), t([[1, 1]])
    advantages, returns = ppo.gae(values, rewards, mask, gamma=1.0, lam=1.0)
    # t=1: delta = 1 + 1 * 0 - 0.8 = 0.2, A_1 = 0.2
    # t=0: delta = 0 + 1 * 0.8 - 0.5 = 0.3, A_0 = 0.3 + 1 * 1 * 0.2 = 0.5
    assert_close(advantages, t([[0.5, 0.2]]))
    # with gamma = lam = 1 the returns are the reward-to-go: 0 + 1 = 1, 1 -> A = R - V
    assert_close(returns, t([[1.0, 1.0]]))


def test_gae_matches_hand_computed_discounted_episode():
    values, rewards, mask = t([[1.0, 2.0, 4.0]]), t([[1.0, 0.0, 2.0]]), t([[1, 1, 1]])
    advantages, returns = ppo.gae(values, rewards, mask, gamma=0.5, lam=0.5)
    # gamma * lam = 0.25
    # t=2: delta = 2 + 0.5 * 0 - 4 = -2,  A_2 = -2
    # t=1: delta = 0 + 0.5 * 4 - 2 = 0,   A_1 = 0 + 0.25 * -2 = -0.5
    # t=0: delta = 1 + 0.5 * 2 - 1 = 1,   A_0 = 1 + 0.25 * -0.5 = 0.875
    assert_close(advantages, t([[0.875, -0.5, -2.0]]))
    # returns = A + V: 1.875, 1.5, 2
    assert_close(returns, t([[1.875, 1.5, 2.0]]))


def test_gae_on_batch_of_two_lengths_zeroes_padding_and_ignores_its_values():
    # row 0 is a two-step episode whose padding holds garbage (value 9, reward 5)
    values = t([0.5, 0.8, 9.0], [1.0, 2.0, 4.0])
    rewards = t([0.0, 1.0, 5.0], [1.0, 0.0, 2.0])
    mask = t([1, 1, 0], [1, 1, 1])
    advantages, returns = ppo.gae(values, rewards, mask, gamma=0.5, lam=0.5)
    # row 0: t=1: delta = 1 + 0.5 * 0 - 0.8 = 0.2 (V after the end is 0, not 9), A_1 = 0.2
    #        t=0: delta = 0 + 0.5 * 0.8 - 0.5 = -0.1, A_0 = -0.1 + 0.25 * 0.2 = -0.05
    #        returns: -0.05 + 0.5 = 0.45, 0.2 + 0.8 = 1.0, padding 0
    # row 1: the discounted episode above
    assert_close(advantages, t([-0.05, 0.2, 0.0], [0.875, -0.5, -2.0]))
    assert_close(returns, t([0.45, 1.0, 0.0], [1.875, 1.5, 2.0]))


# --- losses --------------------------------------------------------------------------


def test_policy_loss_clips_ratio_outside_range_for_both_advantage_signs():
    cliprange = 0.2  # clip(r) in [0.8, 1.2]
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5, 3.0]
    advantages = t([1.0, 2.0, -1.0, 1.0, -1.0, 100.0])
    mask = t([1, 1, 1, 1, 1, 0])  # the last token (ratio 3, A = 100) is padding
    old_logprobs = torch.full((6,), -1.0, dtype=torch.float64)
    logprobs = old_logprobs + t([math.log(r) for r in ratios])
    loss, clipfrac, approxkl = ppo.policy_loss(
        logprobs[None], old_logprobs[None], advantages[None], mask[None], cliprange
    )
    # per token max(-A r, -A clip(r)):
    #   r=1.1, A=+1: max(-1.1, -1.1) = -1.1   (inside the range, not clipped)
    #   r=1.5, A=+2: max(-3.0, -2.4) = -2.4   (clipped)
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8   (clipped)
    #   r=0.5, A=+1: max(-0.5, -0.8) = -0.5   (unclipped term is the pessimistic one)
    #   r=1.5, A=-1: max( 1.5,  1.2) =  1.5   (unclipped term is the pessimistic one)
    # loss = (-1.1 - 2.4 + 0.8 - 0.5 + 1.5) / 5 = -1.7 / 5 = -0.34
    assert loss.item() == pytest.approx(-0.34, rel=1e-9)
    # clipping bound on 2 of 5 real tokens
    assert clipfrac.item() == pytest.approx(0.4, abs=1e-7)  # clipfrac is float32
    # 0.5 * (ln1.1^2 + 2 ln1.5^2 + 2 ln0.5^2) / 5
    #   = 0.5 * (0.0090840 + 2 * 0.1644020 + 2 * 0.4804530) / 5 = 0.5 * 1.2987940 / 5 = 0.1298794
    assert approxkl.item() == pytest.approx(0.1298794, abs=1e-7)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage_with_no_clipping():
    logprobs = t([-0.3, -2.0, -1.0])
    advantages = t([1.0, -3.0, 8.0])
    mask = t([1, 1, 0])
    loss, clipfrac, approxkl = ppo.policy_loss(logprobs, logprobs, advantages, mask, 0.2)
    # r = 1 everywhere: -(1 - 3) / 2 = 1
    assert loss.item() == pytest.approx(1.0, rel=1e-12)
    assert clipfrac.item() == 0.0
    assert approxkl.item() == 0.0


def test_value_loss_is_half_squared_error_when_values_stay_within_clip_range():
    old_values = t([1.0, 1.0])
    values = t([1.125, 0.875])  # moved 0.125 < 0.25
    returns = t([2.0, 0.0])
    loss, clipfrac = ppo.value_loss(values, old_values, returns, t([1, 1]), cliprange_value=0.25)
    # 0.5 * ((1.125 - 2)^2 + (0.875 - 0)^2) / 2 = 0.5 * (0.765625 + 0.765625) / 2 = 0.3828125
    assert loss.item() == pytest.approx(0.3828125, rel=1e-12)
    assert clipfrac.item() == 0.0


def test_value_loss_takes_the_larger_of_clipped_and_unclipped_error():
    old_values = t([1.0, 1.0, 1.0, 0.0])
    values = t([1.5, 1.5, 0.5, 10.0])  # clipped to 1.25, 1.25, 0.75; last token is padding
    returns = t([0.0, 2.0, 0.0, -10.0])
    mask = t([1, 1, 1, 0])
    loss, clipfrac = ppo.value_loss(values, old_values, returns, mask, cliprange_value=0.25)
    # token 0: unclipped (1.5 - 0)^2 = 2.25, clipped (1.25 - 0)^2 = 1.5625 -> 2.25
    # token 1: unclipped (1.5 - 2)^2 = 0.25, clipped (1.25 - 2)^2 = 0.5625 -> 0.5625 (clipped)
    # token 2: unclipped (0.5 - 0)^2 = 0.25, clipped (0.75 - 0)^2 = 0.5625 -> 0.5625 (clipped)
    # loss = 0.5 * (2.25 + 0.5625 + 0.5625) / 3 = 0.5 * 1.125 = 0.5625
    assert loss.item() == pytest.approx(0.5625, rel=1e-12)
    # the clipped term was larger on 2 of 3 real tokens
    assert clipfrac.item() == pytest.approx(2 / 3, abs=1e-7)  # clipfrac is float32


# --- small helpers for statistics ----------------------------------------------------


def test_sequence_sum_adds_only_real_tokens_per_response():
    values = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = t([1, 1, 0], [1, 1, 1])
    # 1 + 2 = 3; 4 + 5 + 6 = 15
    assert_close(tensors.sequence_sum(values, mask), t(3.0, 15.0))


# --- guards of the update ----------------------------------------------------------


def test_should_stop_early_only_when_approxkl_exceeds_one_and_a_half_times_the_target():
    # target 0.1: the line is 1.5 * 0.1 = 0.15, and only exceeding it stops (classic TRL)
    assert not ppo.should_stop_early(0.10, 0.1)
    assert not ppo.should_stop_early(0.15, 0.1)
    assert ppo.should_stop_early(0.1501, 0.1)
    assert not ppo.should_stop_early(0.0, 1e-9)


def test_mean_ratio_averages_pi_over_pi_old_on_real_tokens_only():
    logprobs = t([[LN2, 0.0, 5.0], [LN3 - 1.0, -2.0, 0.0]])
    old = t([[0.0, 0.0, 0.0], [-1.0, -2.0, 0.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # ratios on real tokens: e^ln2 = 2, e^0 = 1, e^(ln3 - 1 + 1) = 3 -> (2 + 1 + 3) / 3 = 2
    assert ppo.mean_ratio(logprobs, old, mask).item() == pytest.approx(2.0, rel=1e-12)


def test_should_skip_minibatch_above_the_ratio_threshold_and_never_when_off():
    assert ppo.should_skip_minibatch(2.0, 1.5)
    assert not ppo.should_skip_minibatch(1.5, 1.5)  # equal is not above
    assert not ppo.should_skip_minibatch(0.9, 1.5)
    assert not ppo.should_skip_minibatch(1e9, None)


def test_explained_variance_of_perfect_critic_is_one():
    returns = t([1.0, 2.0, 4.0, 0.0])
    values = t([1.0, 2.0, 4.0, 50.0])  # wrong only on padding
    mask = t([1, 1, 1, 0])
    # Var[R - V] = 0 on real tokens -> 1 - 0 / Var[R] = 1
    assert ppo.explained_variance(values, returns, mask) == pytest.approx(1.0, abs=1e-12)


def test_explained_variance_matches_hand_value_for_imperfect_critic():
    returns, values, mask = t([1.0, 2.0, 3.0]), t([1.0, 2.0, 2.0]), t([1, 1, 1])
    # Var[R] = ((-1)^2 + 0 + 1^2) / 2 = 1
    # R - V = 0, 0, 1: mean 1/3; ((1/3)^2 + (1/3)^2 + (2/3)^2) / 2 = (6/9) / 2 = 1/3
    # 1 - (1/3) / 1 = 2/3
    assert ppo.explained_variance(values, returns, mask) == pytest.approx(2 / 3, rel=1e-12)
    # a constant critic explains nothing: Var[R - c] = Var[R] -> 0
    assert ppo.explained_variance(t([7.0] * 3), returns, mask) == pytest.approx(0.0, abs=1e-12)


def test_explained_variance_of_constant_returns_is_nan():
    assert math.isnan(ppo.explained_variance(t([1.0, 2.0]), t([3.0, 3.0]), t([1, 1])))


def test_is_finite_rejects_nan_and_inf_in_tensors_and_floats():
    assert tensors.is_finite(torch.tensor([1.0, -2.0]))
    assert not tensors.is_finite(torch.tensor([1.0, float("nan")]))
    assert not tensors.is_finite(torch.tensor([float("inf"), 1.0]))
    assert tensors.is_finite(3.5)
    assert not tensors.is_finite(float("nan"))
    assert not tensors.is_finite(float("-inf"))


def test_pad_right_and_pad_left_place_padding_on_their_side():
    sequences = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    right = tensors.pad_right(sequences, 0)
    left = tensors.pad_left(sequences, 0)
    assert right.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert left.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert right.dtype == left.dtype == torch.int64


def test_pad_with_float_pad_value():
    sequences = [torch.tensor([0.5]), torch.tensor([1.5, 2.5])]
    assert tensors.pad_right(sequences, -1.0).tolist() == [[0.5, -1.0], [1.5, 2.5]]
    assert tensors.pad_left(sequences, -1.0).tolist() == [[-1.0, 0.5], [1.5, 2.5]]
