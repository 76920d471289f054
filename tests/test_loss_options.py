"""The loss options of today's RL fine-tuning (DAPO, GSPO, Dr. GRPO, TRL's RLOO ratio) and three
estimator fixes, each against numbers worked out by hand; two gloo processes for the parts
that reduce over processes."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from rewardtune.config import PPOConfig
from rewardtune.core import advantages as adv
from rewardtune.core import ppo as core
from rewardtune.core import surrogate
from rewardtune.core.tensors import masked_whiten
from rewardtune.rewards import Scores
from rewardtune.sampling.rollout import Generation
from rewardtune.training import dynamic_sampling
from rewardtune.training.dynamic_sampling import Drawn, sample_groups_with_signal
from rewardtune.training.step_stats import reward_moments
from rewardtune.training.update import policy_loss_options
from rewardtune.types import PromptBatch

ONE_PROCESS = types.SimpleNamespace(device="cpu", num_processes=1, gather=lambda t: t)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def logprobs_with_log_ratios(log_ratios: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs requiring grad, old_logprobs) whose difference is ``log_ratios``."""
    old = torch.full_like(log_ratios, -1.0)
    return (old + log_ratios).requires_grad_(), old


# --- clip-higher (DAPO eq. 10) -----------------------------------------------------------


def test_clip_higher_lets_a_positive_advantage_ratio_grow_to_1_plus_eps_high():
    # ratios 1.25, 1.4 (A = +1) and 0.7 (A = -1); eps_low 0.2, eps_high 0.28: range [0.8, 1.28]
    logprobs, old = logprobs_with_log_ratios(t([math.log(1.25), math.log(1.4), math.log(0.7)]))
    advantages, mask = t([1.0, 1.0, -1.0]), t([1, 1, 1])
    loss, clipfrac, _ = core.policy_loss(logprobs, old, advantages, mask, 0.2, cliprange_high=0.28)
    # max(-1.25, -1.25) = -1.25 (inside); max(-1.4, -1.28) = -1.28; max(0.7, 0.8) = 0.8
    # (-1.25 - 1.28 + 0.8) / 3 = -0.576667
    assert loss.item() == pytest.approx(-1.73 / 3, rel=1e-12)
    assert clipfrac.item() == pytest.approx(2 / 3, rel=1e-6)
    loss.backward()
    # only the unclipped token has a gradient: d(-A r)/d log pi = -A r = -1.25, / 3 tokens
    assert_close(logprobs.grad, t([-1.25 / 3, 0.0, 0.0]))
    # the symmetric range [0.8, 1.2] clips the first token too: (-1.2 - 1.2 + 0.8) / 3
    symmetric, clipfrac, _ = core.policy_loss(logprobs.detach(), old, advantages, mask, 0.2)
    assert symmetric.item() == pytest.approx(-1.6 / 3, rel=1e-12)
    assert clipfrac.item() == pytest.approx(1.0, rel=1e-6)


def test_cliprange_low_and_high_default_to_cliprange_and_gspo_takes_its_own_range():
    assert policy_loss_options(PPOConfig(cliprange=0.3), 8, 2)["cliprange_high"] == 0.3
    dapo = policy_loss_options(PPOConfig(cliprange_low=0.2, cliprange_high=0.28), 8, 2)
    assert (dapo["cliprange"], dapo["cliprange_high"]) == (0.2, 0.28)
    gspo = policy_loss_options(PPOConfig(importance_ratio="sequence"), 8, 2)
    assert (gspo["cliprange"], gspo["cliprange_high"]) == (3e-4, 4e-4)
    assert gspo["aggregation"] == "seq_mean_token_mean"


# --- loss aggregation (veRL agg_loss) and Dr. GRPO's constant ----------------------------

LOSSES = t([1.0, 2.0, 3.0], [4.0, 9.0, 9.0])
LOSS_MASK = t([1, 1, 1], [1, 0, 0])


def test_token_mean_weighs_every_real_token_alike():
    # (1 + 2 + 3 + 4) / 4
    assert surrogate.aggregate_loss(LOSSES, LOSS_MASK, "token_mean").item() == 2.5


def test_seq_mean_token_mean_averages_each_response_then_the_responses():
    # response means 2 and 4; a response without real tokens does not count
    mask = torch.cat([LOSS_MASK, t([0, 0, 0])])
    losses = torch.cat([LOSSES, t([7.0, 7.0, 7.0])])
    assert surrogate.aggregate_loss(losses, mask, "seq_mean_token_mean").item() == 3.0


def test_seq_mean_token_sum_norm_divides_the_token_sum_by_the_constant():
    # 10 / (3 tokens x 2 responses)
    value = surrogate.aggregate_loss(LOSSES, LOSS_MASK, "seq_mean_token_sum_norm", 6.0)
    assert value.item() == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match="constant"):
        surrogate.aggregate_loss(LOSSES, LOSS_MASK, "seq_mean_token_sum_norm")


def test_dr_grpo_gives_equal_per_token_gradients_to_responses_of_different_lengths():
    # mini-batch 1: each response is its own minibatch; both have advantage 1, ratio 1
    dr_grpo = PPOConfig(
        advantage="grpo", samples_per_prompt=2, grpo_scale=False, mini_batch_size=1, batch_size=2
    )
    assert policy_loss_options(dr_grpo, 8, 1)["aggregation"] == "seq_mean_token_sum_norm"
    budget = 8  # generation.max_new_tokens

    def token_gradients(ppo: PPOConfig, length: int) -> torch.Tensor:
        logprobs, old = logprobs_with_log_ratios(torch.zeros(1, budget, dtype=torch.float64))
        mask = (torch.arange(budget) < length).double()[None]
        options = policy_loss_options(ppo, budget, rows=1)
        loss, _, _ = core.policy_loss(logprobs, old, torch.ones_like(old), mask, **options)
        loss.backward()
        return logprobs.grad[0, :length]

    # the constant 8 x 1: every token -1/8 whatever its response's length
    assert_close(token_gradients(dr_grpo, 2), torch.full((2,), -1 / 8, dtype=torch.float64))
    assert_close(token_gradients(dr_grpo, 5), torch.full((5,), -1 / 8, dtype=torch.float64))
    # the token mean: -1/2 against -1/5, the length bias Dr. GRPO removes
    grpo = PPOConfig(advantage="grpo", samples_per_prompt=2, mini_batch_size=1, batch_size=2)
    assert token_gradients(grpo, 2)[0].item() == pytest.approx(-1 / 2)
    assert token_gradients(grpo, 5)[0].item() == pytest.approx(-1 / 5)


def test_constant_normaliser_is_the_budget_times_one_process_minibatch():
    assert surrogate.constant_normaliser(32, 4) == 128.0
    # mini_batch_size 8 over 2 processes: 4 rows each, the same constant on both
    ranks = types.SimpleNamespace(num_processes=2)
    updater = types.SimpleNamespace(ppo=PPOConfig(mini_batch_size=8), accelerator=ranks)
    from rewardtune.training.update import Updater

    assert Updater.minibatch_rows(updater) == 4


# --- GSPO and TRL's RLOO: one ratio per response ------------------------------------------

# response 0: log-ratios 0.1, 0.3 (third token padding) -> mean 0.2, sum 0.4
# response 1: log-ratios -0.2, 0.0, 0.2 -> mean 0, sum 0
SEQ_LOG_RATIOS = t([0.1, 0.3, 5.0], [-0.2, 0.0, 0.2])
SEQ_MASK = t([1, 1, 0], [1, 1, 1])
SEQ_ADVANTAGES = t([1.0, 1.0, 1.0], [-2.0, -2.0, -2.0])


def test_gspo_ratio_is_the_length_normalised_sequence_ratio():
    logprobs, old = logprobs_with_log_ratios(SEQ_LOG_RATIOS)
    log_s = surrogate.log_importance_ratio(logprobs, old, SEQ_MASK, "sequence")
    assert_close(log_s.detach(), t([0.2, 0.2, 0.2], [0.0, 0.0, 0.0]))
    log_r = surrogate.log_importance_ratio(logprobs, old, SEQ_MASK, "sequence_unnormalised")
    assert_close(log_r.detach(), t([0.4, 0.4, 0.4], [0.0, 0.0, 0.0]))


def test_gspo_loss_clips_whole_responses_at_its_own_range():
    logprobs, old = logprobs_with_log_ratios(SEQ_LOG_RATIOS)
    loss, clipfrac, _ = core.policy_loss(
        logprobs, old, SEQ_ADVANTAGES, SEQ_MASK, 3e-4, 4e-4, "sequence", "seq_mean_token_mean"
    )
    # s_0 = e^0.2 = 1.2214 > 1.0004 with A = +1: max(-1.2214, -1.0004) = -1.0004 (clipped)
    # s_1 = 1 with A = -2: 2; mean over the two responses: (-1.0004 + 2) / 2
    assert loss.item() == pytest.approx((-1.0004 + 2.0) / 2, rel=1e-12)
    assert clipfrac.item() == pytest.approx(2 / 5, rel=1e-6)  # response 0's 2 tokens of 5
    loss.backward()
    # response 1: 1/G * (-A s) * 1/|y| per token = 1/2 * 2 * 1 * 1/3; clipped response 0: 0
    assert_close(logprobs.grad, t([0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]))


def test_gspo_gradient_has_the_papers_form_and_matches_the_gspo_token_formulation():
    # a wide range, so nothing clips: grad_t = 1/G * (-A_i) * s_i * 1/|y_i| (GSPO eq. 11)
    logprobs, old = logprobs_with_log_ratios(SEQ_LOG_RATIOS)
    loss, _, _ = core.policy_loss(
        logprobs, old, SEQ_ADVANTAGES, SEQ_MASK, 0.5, 0.5, "sequence", "seq_mean_token_mean"
    )
    loss.backward()
    s0 = math.exp(0.2)
    paper = t([-s0 / 4, -s0 / 4, 0.0], [1 / 3, 1 / 3, 1 / 3])
    assert_close(logprobs.grad, paper)
    # veRL's compute_policy_loss_gspo (GSPO-token): s_it = sg[s_i] * pi_t / sg[pi_t]
    token_logprobs, _ = logprobs_with_log_ratios(SEQ_LOG_RATIOS)
    seq = ((token_logprobs - old) * SEQ_MASK).sum(-1) / SEQ_MASK.sum(-1)
    log_s = token_logprobs - token_logprobs.detach() + seq.detach()[:, None]
    losses, _ = surrogate.clipped_surrogate(torch.exp(log_s), SEQ_ADVANTAGES, 0.5, 0.5)
    verl = surrogate.aggregate_loss(losses, SEQ_MASK, "seq_mean_token_mean")
    verl.backward()
    assert verl.item() == pytest.approx(loss.item(), rel=1e-12)
    assert_close(token_logprobs.grad, logprobs.grad)


def test_rloo_sequence_ratio_is_the_whole_response_ratio_as_trl_computes_it():
    logprobs, old = logprobs_with_log_ratios(SEQ_LOG_RATIOS)
    loss, _, _ = core.policy_loss(
        logprobs,
        old,
        SEQ_ADVANTAGES,
        SEQ_MASK,
        0.2,
        0.2,
        "sequence_unnormalised",
        "seq_mean_token_mean",
    )
    # r_0 = e^0.4 = 1.4918 > 1.2 with A = +1: -1.2 (clipped); r_1 = 1, A = -2: 2
    assert loss.item() == pytest.approx((-1.2 + 2.0) / 2, rel=1e-12)
    loss.backward()
    # response 1: 1/2 * 2 * r_1, with no 1/|y| (the log-ratios are summed)
    assert_close(logprobs.grad, t([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]))


def test_a_sequence_ratio_refuses_a_token_level_aggregation():
    with pytest.raises(ValueError, match="seq_mean_token_mean"):
        PPOConfig(importance_ratio="sequence", loss_aggregation="token_mean")
    explicit = PPOConfig(importance_ratio="sequence", loss_aggregation="seq_mean_token_mean")
    assert explicit.loss_aggregation == "seq_mean_token_mean"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, "token_mean"),
        ({"advantage": "grpo", "samples_per_prompt": 2}, "token_mean"),
        ({"advantage": "grpo", "samples_per_prompt": 2, "grpo_scale": False}, "seq_mean_token_sum_norm"),
        ({"importance_ratio": "sequence"}, "seq_mean_token_mean"),
        ({"advantage": "rloo", "samples_per_prompt": 2, "importance_ratio": "sequence_unnormalised"}, "seq_mean_token_mean"),
        ({"advantage": "grpo", "samples_per_prompt": 2, "grpo_scale": False, "loss_aggregation": "token_mean"}, "token_mean"),
    ],
)  # fmt: skip
def test_an_unset_loss_aggregation_is_the_one_the_estimator_is_published_with(keys, expected):
    assert policy_loss_options(PPOConfig(**keys), 8, 2)["aggregation"] == expected


# --- overlong filtering (DAPO section 3.4) ------------------------------------------------


def test_responses_without_a_stop_token_at_their_end_are_truncated():
    ids = torch.tensor([[5, 2, 0], [5, 6, 7], [2, 0, 0], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    # ends in EOS 2; cut at the limit; only EOS; cut at a per-row length of 2
    truncated = surrogate.ends_without_stop(ids, mask, torch.tensor([2, 3]))
    assert truncated.tolist() == [False, True, False, True]


def test_a_masked_truncated_response_gets_no_policy_gradient_and_leaves_the_token_count():
    logprobs, old = logprobs_with_log_ratios(torch.zeros(2, 2, dtype=torch.float64))
    mask = t([1, 1], [1, 1])
    loss_mask = mask * torch.tensor([1.0, 0.0], dtype=torch.float64)[:, None]  # row 1 truncated
    loss, _, _ = core.policy_loss(logprobs, old, t([1.0, 1.0], [5.0, 5.0]), loss_mask, 0.2)
    assert loss.item() == pytest.approx(-1.0)  # -(1 + 1) / 2 tokens, not / 4
    loss.backward()
    assert_close(logprobs.grad, t([-0.5, -0.5], [0.0, 0.0]))


# --- fix 1: GRPO with the KL in the reward, in a tied group --------------------------------


def grpo_with_kl(beta: float, scores: torch.Tensor, kl_sums: list[float]) -> torch.Tensor:
    """compute_advantages for GRPO (k = 3), one token per response carrying its KL."""
    ref = torch.zeros(len(kl_sums), 1, dtype=torch.float64)
    logprobs = t(*[[k] for k in kl_sums])
    mask = torch.ones(len(kl_sums), 1)
    spec = adv.Estimator(name="grpo", samples_per_prompt=3)
    out = adv.compute_advantages(spec, scores, logprobs, ref, torch.zeros_like(ref), mask, beta)
    return out.advantages[:, 0]


def test_grpo_kl_part_of_a_tied_group_doubles_when_beta_doubles():
    tied = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    kl = [0.2, 0.5, 0.8]  # mean 0.5: the KL part is -beta * (-0.3, 0, 0.3)
    assert_close(grpo_with_kl(0.1, tied, kl), t(0.03, 0.0, -0.03))
    assert_close(grpo_with_kl(0.2, tied, kl), t(0.06, 0.0, -0.06))
    # scores 1, 2, 3 (standardised -1, 0, 1) plus the same KL part
    spread = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert_close(
        grpo_with_kl(0.1, spread, kl), t(-1.0 + 0.03, 0.0, 1.0 - 0.03), rtol=1e-5, atol=1e-6
    )


def test_dr_grpo_kl_part_is_the_same_as_centring_score_and_kl_together():
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    kl_rewards = torch.tensor([-0.1, -0.4, 0.0, -0.3, -0.2, -0.1], dtype=torch.float64)
    assert_close(
        adv.grpo_advantages_with_kl(scores, kl_rewards, 3, scale=False),
        adv.grpo_advantages(scores + kl_rewards, 3, scale=False),
    )


# --- fix 4: a group masked for a non-finite score -----------------------------------------


@pytest.mark.parametrize("name", ["rloo", "grpo", "reinforce_pp", "gae"])
def test_a_masked_group_gets_advantage_0_and_gradient_0_and_leaves_the_others_unchanged(name):
    k = 2
    scores = torch.tensor([1.0, 3.0, 0.0, 0.0, 2.0, 5.0], dtype=torch.float64)  # group 1 masked
    mask = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 0], [1, 1], [1, 1]])
    ref = torch.full((6, 2), -2.0, dtype=torch.float64)
    logprobs = ref + t([0.1, 0.2], [0.3, 0.0], [0.5, 0.5], [0.4, 0.4], [0.0, 0.1], [0.2, 0.2])
    values = t([0.1, 0.2], [0.3, 0.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.4], [0.0, 0.1])
    spec = adv.Estimator(name=name, samples_per_prompt=k)
    full = adv.compute_advantages(spec, scores, logprobs, ref, values, mask, 0.1)
    assert_close(full.advantages[2:4], torch.zeros(2, 2, dtype=torch.float64))
    keep = [0, 1, 4, 5]
    alone = adv.compute_advantages(
        spec, scores[keep], logprobs[keep], ref[keep], values[keep], mask[keep], 0.1
    )
    assert_close(full.advantages[keep], alone.advantages)
    new_logprobs = logprobs.clone().requires_grad_()
    loss, _, _ = core.policy_loss(new_logprobs, logprobs, full.advantages, mask, 0.2)
    loss.backward()
    assert (new_logprobs.grad[2:4] == 0).all()


def test_reward_mean_leaves_out_the_finite_members_of_a_masked_group():
    raw = torch.tensor([1.0, float("nan"), 3.0, 5.0])
    valid = torch.tensor([False, False, True, True])  # k = 2: group 0 masked whole
    stats = reward_moments(ONE_PROCESS, raw, valid)
    assert stats["reward_mean"] == 4.0
    assert stats["reward_std"] == pytest.approx(math.sqrt(2.0))


# --- dynamic sampling (DAPO section 3.2) --------------------------------------------------


def test_tied_groups_are_the_groups_whose_scores_are_all_equal():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, float("nan"), float("nan"), 1.0])
    assert adv.tied_groups(scores, 3).tolist() == [True, False, False]


def fake_draws(rounds: list[list[float]]):
    """draw(r) -> round r's scores, each prompt named 'r.g' (group g of round r)."""

    def draw(r: int) -> Drawn:
        scores = rounds[r]
        queries = [f"{r}.{i // 2}" for i in range(len(scores))]
        ids = [torch.tensor([r, i // 2]) for i in range(len(scores))]
        responses = [torch.tensor([i]) for i in range(len(scores))]
        generation = Generation(responses, seconds=1.0)
        return Drawn(PromptBatch(queries, ids), generation, list(queries), Scores(scores, {}), 0.5)

    return draw


ROUNDS = [[1, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 1]]  # k = 2, 2 groups each


def test_dynamic_sampling_draws_until_the_share_is_full_and_keeps_the_groups_with_signal():
    batch, stats = sample_groups_with_signal(fake_draws(ROUNDS), ONE_PROCESS, 2, 2, 3)
    # round 0 keeps group 1; round 1 none; round 2 both: full after 2 extra rounds
    assert batch.batch.query == ["0.1", "0.1", "2.0", "2.0"]
    assert batch.scores.total == [0, 1, 0, 1]
    assert [int(r) for r in batch.generation.responses] == [2, 3, 0, 1]
    assert (batch.generation.seconds, batch.reward_seconds) == (3.0, 1.5)  # all three draws
    assert stats.filtered_groups == 0.5  # 3 of the 6 groups drawn tied
    assert (stats.batch_fill, stats.resample_rounds) == (1.0, 2)


def test_dynamic_sampling_trains_on_what_there_is_after_max_resample_rounds():
    batch, stats = sample_groups_with_signal(fake_draws(ROUNDS), ONE_PROCESS, 2, 2, 1)
    assert batch.batch.query == ["0.1", "0.1"]
    assert (stats.batch_fill, stats.resample_rounds, stats.filtered_groups) == (0.5, 1, 0.75)


def test_dynamic_sampling_with_no_signal_anywhere_trains_on_the_steps_own_draw():
    tied = [[1, 1, 0, 0], [2, 2, 3, 3]]
    batch, stats = sample_groups_with_signal(fake_draws(tied), ONE_PROCESS, 2, 2, 1)
    assert batch.batch.query == ["0.0", "0.0", "0.1", "0.1"]
    assert (stats.batch_fill, stats.filtered_groups) == (0.0, 1.0)


# --- two processes: REINFORCE++ whitening and dynamic sampling ----------------------------


class GlooAccelerator:
    """What the code under test reads of an accelerate ``Accelerator``, over torch.distributed."""

    device = torch.device("cpu")
    num_processes = 2

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)


REWARDS = t([0.1, -0.2, 1.0, 0.0], [0.5, 9.0, 9.0, 9.0], [2.0, 0.0, 0.0, 0.0], [-1, 0.3, 0.3, 0])
RP_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
# rank 1's draws: round 0 all tied, round 1 one group with signal, round 2 another
RANK_ROUNDS = {
    0: [[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    1: [[1, 1, 0, 0], [0, 1, 2, 2], ROUNDS[0]],
}


def _two_process_worker(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rows = slice(2 * rank, 2 * rank + 2)

        def all_reduce(values: torch.Tensor) -> torch.Tensor:
            values = values.clone()
            dist.all_reduce(values)
            return values

        advantages, _ = adv.reinforce_pp_advantages(REWARDS[rows], RP_MASK[rows], 1.0, all_reduce)
        batch, stats = dynamic_sampling.sample_groups_with_signal(
            fake_draws(RANK_ROUNDS[rank]), GlooAccelerator(), 2, 2, 3
        )
        out[rank] = (advantages, batch.batch.query, stats)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = mp.Manager().dict()
    init_file = tmp_path_factory.mktemp("gloo") / "init"
    mp.spawn(_two_process_worker, args=(str(init_file), out), nprocs=2, join=True)
    return dict(out)


def test_reinforce_pp_whitens_over_both_processes_as_one_process_over_the_whole_batch(
    two_processes,
):
    whole, _ = adv.reinforce_pp_advantages(REWARDS, RP_MASK, 1.0)
    assert_close(torch.cat([two_processes[0][0], two_processes[1][0]]), whole)
    assert_close(whole, masked_whiten(adv.discounted_returns(REWARDS, RP_MASK, 1.0), RP_MASK))
    # whitening each half alone would differ
    alone, _ = adv.reinforce_pp_advantages(REWARDS[:2], RP_MASK[:2], 1.0)
    assert not torch.allclose(alone, whole[:2])


def test_dynamic_sampling_with_two_processes_draws_alike_and_trains_equal_shares(two_processes):
    (_, queries0, stats0), (_, queries1, stats1) = two_processes[0], two_processes[1]
    # rank 0 is full after round 0 but draws as long as rank 1 (round 2: 1 group, then full)
    assert stats0.resample_rounds == stats1.resample_rounds == 2
    assert queries0 == ["0.0", "0.0", "0.1", "0.1"]
    assert queries1 == ["1.0", "1.0", "2.1", "2.1"]
    # rank 0: 0 + 2 + 2 tied, rank 1: 2 + 1 + 1, of 12 groups drawn on both processes
    assert stats0.filtered_groups == stats1.filtered_groups == pytest.approx(8 / 12)
    assert stats0.batch_fill == stats1.batch_fill == 1.0


# --- the report names what ran --------------------------------------------------------------


def test_report_run_summary_names_the_loss_options_the_run_used():
    from rewardtune.report.report import _loss_text

    assert _loss_text(PPOConfig().model_dump()) == (
        "token ratio, clipped to [1 - 0.2, 1 + 0.2]; token_mean"
    )
    dapo = PPOConfig(
        cliprange_low=0.2,
        cliprange_high=0.28,
        samples_per_prompt=4,
        filter_groups=True,
        mask_truncated=True,
    )
    assert _loss_text(dapo.model_dump(mode="json")) == (
        "token ratio, clipped to [1 - 0.2, 1 + 0.28] (clip-higher, Yu et al. 2025); token_mean; "
        "truncated responses masked (DAPO); dynamic sampling, up to 3 extra draws a step (DAPO)"
    )
    gspo = _loss_text(PPOConfig(importance_ratio="sequence").model_dump(mode="json"))
    assert gspo.startswith("GSPO sequence ratio (Zheng et al. 2025), clipped to [1 - 0.0003")
    dr_grpo = PPOConfig(advantage="grpo", samples_per_prompt=2, grpo_scale=False)
    assert _loss_text(dr_grpo.model_dump()).endswith(
        "seq_mean_token_sum_norm (Dr. GRPO's constant normaliser)"
    )


# --- dynamic sampling in train(): exact under resume ----------------------------------------


class ParityReward:
    """0/1 by the parity of the response's length in characters: half of the groups of 2 tie."""

    name = "parity"

    def __call__(self, prompts, responses):
        return [float(len(text) % 2) for text in responses]


def filtered_trainer(tmp_path, tiny_llama, prompts_file, steps: int, run_name: str):
    import yaml

    from conftest import tiny_overrides
    from rewardtune import PPOTrainer, load_config
    from rewardtune.rewards import WeightedReward
    from rewardtune.runs.rundir import RunDir

    recipe = tmp_path / "filter.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}], "eval": {"enabled": False}}))
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=steps,
        **{
            "ppo.advantage": "grpo",
            "ppo.samples_per_prompt": 2,
            "ppo.filter_groups": True,
            "ppo.max_resample_rounds": 2,
            "ppo.learning_rate": 1e-2,
        },
    )
    config = load_config(str(recipe), overrides)
    run = RunDir.create(tmp_path / run_name, config.to_yaml())
    reward = WeightedReward([(ParityReward(), 1.0)])
    return PPOTrainer(config, reward=reward, run_dir=run), run


def stable(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in history
    ]


def test_dynamic_sampling_resumed_run_draws_and_trains_what_the_straight_run_did(
    tmp_path, tiny_llama, prompts_file
):
    straight, _ = filtered_trainer(tmp_path, tiny_llama, prompts_file, 4, "straight")
    history = straight.train()
    assert sum(h["env/resample_rounds"] for h in history) > 0  # ties were redrawn
    first, run = filtered_trainer(tmp_path, tiny_llama, prompts_file, 2, "first-half")
    first.train()
    resumed, _ = filtered_trainer(tmp_path, tiny_llama, prompts_file, 4, "second-half")
    resumed.load_checkpoint(run.path / "checkpoints" / "step-2")
    assert stable(resumed.train()) == stable(history[2:])
