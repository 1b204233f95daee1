"""OT relabelling core (ailot.relabel): each layer alone, then the batched rewards, OTR, and input checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ailot import relabel as R
from ailot.errors import AilotInputError

D = 8  # embedding dim of the synthetic trajectories
EPS = 0.1  # converges within the 1000-iteration cap on these costs (unit-scale steps); 1e-3 does not, see
#           test_paper_epsilon_reports_iterations


def walk(rng, T: int, d: int = D, step: float = 0.3) -> np.ndarray:
    """A random walk [T, d]: consecutive states close, distant ones far, like a temporally aware embedding."""
    return np.cumsum(rng.normal(size=(T, d)) * step, axis=0).astype(np.float32)


def pad(trajs: list[np.ndarray], length: int, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((len(trajs), length, trajs[0].shape[1]), fill, np.float32)
    for i, t in enumerate(trajs):
        out[i, : len(t)] = t
    return out, np.array([len(t) for t in trajs])


@functools.partial(jax.jit, static_argnames=("k", "k_term"))
def _layered(x, y, j1, eps, alpha, tau, *, k, k_term):
    Ta, Te = x.shape[0], y.shape[0]
    cost = R.intent_cost(x, Ta, y, Te, k) if k_term else R.sq_dists(x, y)
    j1 = jnp.where(j1 < 0, R.expert_start(cost, Te), j1)
    a, b = R.marginals(Ta, Te, j1, Ta, Te)
    plan, _ = R.solve_ot(cost, a, b, epsilon=eps, momentum=R.MOMENTUM)  # as ailot_rewards solves
    return R.reward_from_plan(plan, cost, Ta, alpha, tau)


def layered(x, y, *, k=1, eps=EPS, j1=None, alpha=R.ALPHA, tau=R.TAU, k_term=True) -> np.ndarray:
    """Rewards [Ta] of one unpadded agent x vs one expert y composed from the public layers, with the
    k-term optionally removed (cost = first term only) and j1 optionally forced."""
    return np.asarray(_layered(jnp.asarray(x), jnp.asarray(y), -1 if j1 is None else j1, eps, alpha, tau,
                               k=k, k_term=k_term))


# ------------------------------------------------------------------------------------------------ layers


def test_intent_cost_matches_hand_formula_with_clamping_to_valid_lengths():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    x[4:], y[5:] = np.nan, 1e3  # padding past Ta = 4, Te = 5: must never be read
    cost = np.asarray(R.intent_cost(x, 4, y, 5, k=2))
    for i in range(4):
        for j in range(5):
            ik, jk = min(i + 2, 3), min(j + 2, 4)
            want = np.sum((x[i] - y[j]) ** 2) + np.sum((x[ik] - y[jk]) ** 2)
            assert cost[i, j] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert np.isfinite(cost).all()  # NaN padding was masked, not propagated


def test_expert_start_and_marginals():
    cost = jnp.array([[5.0, 3.0, 0.5, 4.0, -9.0], [0.0] * 5])  # the -9 sits in the padding (Te = 4)
    assert int(R.expert_start(cost, 4)) == 2
    a, b = R.marginals(3, 4, 2, 5, 6)
    np.testing.assert_array_equal(np.asarray(a), np.array([1 / 3] * 3 + [0, 0], np.float32))
    np.testing.assert_array_equal(np.asarray(b), np.array([0, 0, 0.5, 0.5, 0, 0], np.float32))


@pytest.mark.parametrize("momentum", ["none", R.MOMENTUM, "adaptive"])
def test_plan_marginals_and_exact_zero_mass_on_padding_and_before_j1(momentum):
    """ott's lse Sinkhorn gives zero-weight rows/columns a -inf potential, hence exactly zero plan entries;
    over-relaxation mixes old and new potentials, (1 - w) * 0 + w * -inf, and must keep them at -inf."""
    rng = np.random.default_rng(1)
    expert = walk(rng, 40)
    Ta, Te, T, Tp = 25, 40, 32, 48
    x, _ = pad([expert[10:35] + 0.05 * rng.normal(size=(25, D)).astype(np.float32)], T)
    y, _ = pad([expert], Tp)
    cost = R.intent_cost(x[0], Ta, y[0], Te, 1)
    j1 = int(R.expert_start(cost, Te))
    assert j1 == int(np.argmin(((expert - x[0, 0]) ** 2).sum(1) + ((expert[np.minimum(np.arange(Te) + 1, Te - 1)]
                                                                     - x[0, 1]) ** 2).sum(1)))
    assert j1 > 0
    a, b = R.marginals(Ta, Te, j1, T, Tp)
    plan, info = R.solve_ot(cost, a, b, epsilon=EPS, momentum=momentum)
    plan = np.asarray(plan)
    assert bool(info["converged"]) and 0 < int(info["n_iters"]) < R.MAX_ITERATIONS
    rows = plan[:Ta].sum(1)
    if momentum == "none":
        np.testing.assert_allclose(rows, 1 / Ta, rtol=1e-4)  # the last Sinkhorn update fits rows
    else:  # an over-relaxed last update leaves rows within the stopping threshold too
        assert np.abs(rows - 1 / Ta).sum() < R.THRESHOLD
    assert np.abs(plan[:, j1:Te].sum(0) - 1 / (Te - j1)).sum() < R.THRESHOLD  # ott's L1 stopping criterion
    assert (plan[Ta:] == 0).all() and (plan[:, Te:] == 0).all() and (plan[:, :j1] == 0).all()
    assert plan.sum() == pytest.approx(1.0, abs=1e-4)
    r = np.asarray(R.reward_from_plan(jnp.asarray(plan), cost, Ta, R.ALPHA, R.TAU))
    assert (r[Ta:] == 0).all() and (r[:Ta] > 0).all()
    per_state = Ta * (plan[:Ta] * np.asarray(cost)[:Ta]).sum(1)
    np.testing.assert_allclose(r[:Ta], R.ALPHA * np.exp(-R.TAU * per_state), rtol=1e-5)


# ------------------------------------------------------------------------------------------ AILOT rewards


def test_padded_batch_equals_each_episode_alone():
    rng = np.random.default_rng(2)
    expert = walk(rng, 45)
    agents = [expert[:37] + 0.1 * rng.normal(size=(37, D)).astype(np.float32), walk(rng, 64), walk(rng, 50)]
    x, lens = pad(agents, 64)
    y, ylen = pad([expert], 64, fill=np.nan)  # garbage in the expert's padding must not matter
    batched, stats = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, return_info=True)
    assert batched.dtype == np.float32 and batched.shape == (3, 64)
    for i, t in enumerate(agents):
        alone = R.ailot_rewards(t[None], [len(t)], expert[None], [45], epsilon=EPS)[0]
        # same iterations; only float rounding differs between shapes (1e-4 here; mass on padding shows at 1e-2)
        np.testing.assert_allclose(batched[i, : len(t)], alone, rtol=3e-4, atol=1e-6)
        assert (batched[i, len(t):] == 0).all()
    # a chunk size that leaves a padded last chunk gives the same numbers (vmapped, so rounded differently)
    chunked = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, chunk_size=2)
    np.testing.assert_allclose(chunked, batched, rtol=3e-4, atol=1e-6)
    assert stats.n_iters.shape == (3, 1) and stats.converged.all() and (stats.error < R.THRESHOLD).all()


def test_one_compilation_per_length_bucket():
    rng = np.random.default_rng(3)
    d = 5  # a shape no other test uses, so the cache count is ours
    expert = walk(rng, 30, d)[None]
    first = pad([walk(rng, t, d) for t in (20, 25, 31)], 32)
    second = pad([walk(rng, t, d) for t in (17, 30, 32, 22, 19)], 32)
    before = R.sinkhorn_batch._cache_size()
    R.ailot_rewards(*first, expert, [30], epsilon=EPS, chunk_size=4)
    R.ailot_rewards(*second, expert, [30], epsilon=EPS, chunk_size=4)
    R.ailot_rewards(*second, expert, [30], epsilon=0.03, tau=0.2, chunk_size=4)  # traced scalars: no recompile
    assert R.sinkhorn_batch._cache_size() == before + 1


def test_expert_copy_beats_reversed_and_shuffled_and_needs_the_k_term():
    rng = np.random.default_rng(4)
    expert = walk(rng, 48)
    same = expert.copy()
    rev = expert[::-1].copy()
    shuf = np.concatenate([expert[:1], rng.permutation(expert[1:])])  # same start, so the same j1 = 0
    total = {name: layered(t, expert).sum() for name, t in (("same", same), ("rev", rev), ("shuf", shuf))}
    assert total["same"] > 0.9 * R.ALPHA * 48  # near-perfect match
    assert total["same"] > 3 * total["rev"] and total["same"] > 3 * total["shuf"]
    # The same through the batched API.
    x, lens = pad([same, rev, shuf], 64)
    batched = R.ailot_rewards(x, lens, expert[None], [48], epsilon=EPS).sum(1)
    # padding and fusion change float rounding; over-relaxed Sinkhorn carries that to ~1e-4 (threshold 1e-3)
    np.testing.assert_allclose(batched, [total["same"], total["rev"], total["shuf"]], rtol=1e-3)
    # Without the k-term the cost sees only sets of states: a shuffle with the same start is a perfect match,
    # and the reversal is separated only by the j1 window (with j1 = 0 forced, not at all).
    no_k = {name: layered(t, expert, k_term=False, j1=0).sum() for name, t in (("same", same), ("rev", rev),
                                                                               ("shuf", shuf))}
    assert no_k["shuf"] == pytest.approx(no_k["same"], rel=1e-3)
    assert no_k["rev"] == pytest.approx(no_k["same"], rel=1e-3)
    with_k_no_window = layered(rev, expert, j1=0).sum()
    # the k-term alone separates the reversal: matched states i <-> Te-1-i still differ by two steps in the
    # k-offset term, so each reward drops to about alpha * exp(-tau * 2 * step^2 * d) ~ half
    assert total["same"] > 1.5 * with_k_no_window


def test_rewards_lie_in_zero_alpha_and_zero_past_length():
    rng = np.random.default_rng(5)
    expert = walk(rng, 40)
    x, lens = pad([expert[:30], walk(rng, 40), walk(rng, 9, step=0.05)], 40)
    r = R.ailot_rewards(x, lens, expert[None], [40], epsilon=EPS, alpha=2.5)
    for i, t in enumerate(lens):
        assert (r[i, :t] > 0).all() and (r[i, :t] <= 2.5).all() and (r[i, t:] == 0).all()
    assert r[0, :30].mean() > r[1].mean()  # the expert prefix is closer than an unrelated walk


def test_max_over_experts_is_the_elementwise_max():
    rng = np.random.default_rng(6)
    A, B = walk(rng, 40), walk(rng, 28)
    agents = [A[:30] + 0.1 * rng.normal(size=(30, D)).astype(np.float32), B[:20], walk(rng, 32)]
    x, lens = pad(agents, 32)
    both = R.ailot_rewards(x, lens, *pad([A, B], 40), epsilon=EPS)
    only_a = R.ailot_rewards(x, lens, A[None], [40], epsilon=EPS)
    only_b = R.ailot_rewards(x, lens, B[None], [28], epsilon=EPS)
    np.testing.assert_allclose(both, np.maximum(only_a, only_b), rtol=1e-4, atol=1e-6)
    assert (only_a[0, :30] > only_b[0, :30]).mean() > 0.9 and (only_b[1, :20] > only_a[1, :20]).mean() > 0.9


def test_merge_mode_pools_experts():
    rng = np.random.default_rng(7)
    A, B = walk(rng, 40), walk(rng, 33)
    x, lens = pad([A[5:35], B[:25]], 32)
    kw = dict(epsilon=EPS)
    # one expert: merging is the same problem as the paper's per-expert solve
    np.testing.assert_allclose(R.ailot_rewards(x, lens, A[None], [40], expert_mode="merge", **kw),
                               R.ailot_rewards(x, lens, A[None], [40], **kw), rtol=1e-4, atol=1e-6)
    # a duplicated expert halves every weight of the pooled cloud but leaves each row's expected cost alone
    np.testing.assert_allclose(R.ailot_rewards(x, lens, *pad([A, A], 40), expert_mode="merge", **kw),
                               R.ailot_rewards(x, lens, A[None], [40], **kw), rtol=1e-3, atol=1e-5)
    merged, stats = R.ailot_rewards(x, lens, *pad([A, B], 40), expert_mode="merge", return_info=True, **kw)
    maxed = R.ailot_rewards(x, lens, *pad([A, B], 40), **kw)
    assert stats.n_iters.shape == (2, 1)
    assert not np.allclose(merged, maxed, rtol=1e-2)  # a pooled marginal is a different problem
    # agent 1 follows B only: pooling forces part of its mass onto A's states, so it earns less than max
    assert merged[1, :25].sum() < maxed[1, :25].sum()


def test_j1_window_is_honoured():
    rng = np.random.default_rng(8)
    direction = rng.normal(size=D).astype(np.float32)
    expert = np.arange(40, dtype=np.float32)[:, None] * 0.2 * direction / np.linalg.norm(direction)
    agent = expert[15:35] + 0.01 * rng.normal(size=(20, D)).astype(np.float32)
    cost = R.intent_cost(agent, 20, expert, 40, 1)
    assert int(R.expert_start(cost, 40)) == 15  # the expert state nearest the agent's start, by construction
    got = R.ailot_rewards(agent[None], [20], expert[None], [40], epsilon=EPS)[0]
    np.testing.assert_allclose(got, layered(agent, expert, j1=15), rtol=1e-4)
    from_zero = layered(agent, expert, j1=0)
    assert got.sum() > 1.5 * from_zero.sum()  # from j1 = 0 the agent must also cover states 0..14


def test_rewards_respond_to_epsilon_k_tau_and_relative_epsilon():
    rng = np.random.default_rng(9)
    expert = walk(rng, 40)
    noise = rng.normal(size=(2, 32, D)).astype(np.float32)
    x, lens = pad([expert[:32] + 0.2 * noise[0], expert[8:40] + 0.4 * noise[1]], 32)
    y, ylen = expert[None], [40]
    base = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS)
    # tau enters only the squashing: log(r / alpha) / tau is the per-state transport cost, whatever tau
    other_tau = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, tau=1.3)
    ok = (base > 1e-30) & (other_tau > 1e-30)  # far states underflow to 0 in float32; compare the rest
    assert ok.all()
    np.testing.assert_allclose(np.log(other_tau[ok] / R.ALPHA) / 1.3, np.log(base[ok] / R.ALPHA) / R.TAU,
                               rtol=1e-4)
    assert not np.allclose(other_tau, base, rtol=1e-2)
    # epsilon changes the plan (blurrier plans cost more for the near-copy)
    blurry = R.ailot_rewards(x, lens, y, ylen, epsilon=1.0)
    assert blurry[0].sum() < 0.95 * base[0].sum()
    # k changes the cost's second term
    k3 = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, k=3)
    assert np.abs(k3 - base).max() > 1e-2
    # relative epsilon = epsilon * the mean cost over valid entries of each problem (window included)
    rel = R.ailot_rewards(x[:1], [32], y, ylen, epsilon=0.01, relative_epsilon=True)
    cost = R.intent_cost(x[0], 32, expert, 40, 1)
    j1 = int(R.expert_start(cost, 40))
    mean_cost = float(np.asarray(cost)[:, j1:].mean())
    np.testing.assert_allclose(rel[0], layered(x[0], expert, eps=0.01 * mean_cost), rtol=1e-4)


def test_paper_epsilon_reports_iterations():
    rng = np.random.default_rng(10)
    expert = walk(rng, 40)
    x, lens = pad([expert[:32], walk(rng, 32)], 32)
    r, stats = R.ailot_rewards(x, lens, expert[None], [40], return_info=True, max_iterations=200)
    assert np.isfinite(r).all() and (r[0, :32] > 0).all()
    assert stats.n_iters.shape == (2, 1) and (stats.n_iters <= 200).all() and (stats.n_iters % 10 == 0).all()
    assert (stats.converged == (stats.error < R.THRESHOLD)).all()


def _slow_walks(n: int = 8):
    """Problems plain Sinkhorn needs hundreds of iterations for at EPS (random walks vs a walk)."""
    rng = np.random.default_rng(13)
    expert = walk(rng, 45)
    agents = [expert[:37] + 0.1 * rng.normal(size=(37, D)).astype(np.float32)]
    agents += [walk(rng, int(t)) for t in rng.integers(20, 48, n - 1)]
    return pad(agents, 48), expert


def test_momentum_converges_faster_to_the_same_solution():
    (x, lens), expert = _slow_walks()
    y, ylen = expert[None], [45]
    tight = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, momentum="none", threshold=1e-6, max_iterations=20000)
    plain, plain_stats = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, momentum="none", return_info=True)
    fast, fast_stats = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, return_info=True)  # the default, 1.6
    assert fast_stats.converged.all() and np.median(plain_stats.n_iters) > 300
    assert fast_stats.n_iters.sum() < 0.5 * plain_stats.n_iters.sum()
    # both stop at the same marginal error; the over-relaxed one is at least as close to the tight solution
    assert np.abs(fast - tight).max() < 2e-2
    assert np.abs(fast - tight).max() <= np.abs(plain - tight).max()
    # a fixed weight is a setting of its own: it changes the numbers (slightly) and compiles separately
    other = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, momentum=1.3)
    assert 0 < np.abs(other - fast).max() < 2e-2


def test_a_diverged_over_relaxed_solve_is_solved_again_without_momentum():
    (x, lens), expert = _slow_walks()
    y, ylen = expert[None], np.array([45], np.int32)
    # at weight 1.9 Sinkhorn blows up on these problems, and says so (ott alone would call them converged)
    _, raw = R.sinkhorn_batch(x, lens.astype(np.int32), y, ylen, EPS, R.ALPHA, R.TAU, k=1, relative_epsilon=False,
                              merge=False, threshold=R.THRESHOLD, max_iterations=R.MAX_ITERATIONS,
                              lse_mode=True, inner_iterations=10, momentum=1.9)
    diverged = ~np.isfinite(np.asarray(raw["error"])[:, 0])
    assert diverged.sum() >= 3 and not np.asarray(raw["converged"])[diverged].any()
    rewards, stats = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, momentum=1.9, return_info=True)
    plain = R.ailot_rewards(x, lens, y, ylen, epsilon=EPS, momentum="none")
    assert np.isfinite(rewards).all() and np.isfinite(stats.error).all()
    np.testing.assert_array_equal(rewards[diverged], plain[diverged])  # re-solved exactly as without momentum
    for i in range(len(lens)):
        assert (rewards[i, lens[i]:] == 0).all()


def test_bucketed_helper_matches_direct_calls():
    rng = np.random.default_rng(11)
    expert = walk(rng, 40)
    trajs = [walk(rng, t) for t in (10, 70, 33, 64)]
    out = R.ailot_rewards_bucketed(trajs, [expert], buckets=(32, 64, 128), epsilon=EPS)
    assert [len(o) for o in out] == [10, 70, 33, 64]
    # buckets 32: {10}, 64: {33, 64}, 128: {70}; padded results equal unpadded ones (tested above)
    for idx, bucket in (([0], 32), ([2, 3], 64), ([1], 128)):
        direct = R.ailot_rewards(*pad([trajs[i] for i in idx], bucket), expert[None], [40], epsilon=EPS)
        for row, i in enumerate(idx):
            np.testing.assert_array_equal(out[i], direct[row, : len(trajs[i])])


def test_bucketed_compiles_each_bucket_once_in_the_shape_it_solves():
    """The background warm-up must compile the very shapes the solves use: one compilation per bucket."""
    rng = np.random.default_rng(14)
    d = 7  # a dimension no other test uses, so the cache count is ours
    expert = walk(rng, 40, d)
    trajs = [walk(rng, t, d) for t in (10, 70, 33, 64, 50, 12)]  # buckets 32: 2 trajs, 64: 3, 128: 1
    before = R.sinkhorn_batch._cache_size()
    out = R.ailot_rewards_bucketed(trajs, [expert], buckets=(32, 64, 128), epsilon=EPS, chunk_size=2)
    assert R.sinkhorn_batch._cache_size() == before + 3  # (2, 32), (2, 64) and (1, 128): no second shape
    again = R.ailot_rewards_bucketed(trajs, [expert], buckets=(32, 64, 128), epsilon=EPS, chunk_size=2)
    assert R.sinkhorn_batch._cache_size() == before + 3
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a, b)


def _modelled_seconds(plan, lengths, expert_length, solves, backend="cpu"):
    """The cost `plan_buckets` minimises, written out directly: compiles + per-episode padded solves."""
    fixed, per_cell = R.ITERATION_SECONDS[backend]
    total = len(plan) * R.COMPILE_SECONDS[backend]
    for t in lengths:
        size = min(b for b in plan if b >= t)
        total += solves * R.PLANNED_ITERATIONS * (fixed + per_cell * size * expert_length)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_bucket_plan_is_the_cheapest_partition(seed):
    """Exhaustive check of the dynamic programme: no other set of bucket lengths is cheaper under its model."""
    import itertools

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 1000, size=rng.integers(3, 400))
    expert_length, solves = int(rng.integers(50, 1200)), int(rng.integers(1, 20))
    plan = R.plan_buckets(lengths, expert_length, solves=solves, backend="cpu")
    aligned = sorted(set((-(-lengths // R.BUCKET_ALIGN) * R.BUCKET_ALIGN).tolist()))
    assert all(b % R.BUCKET_ALIGN == 0 for b in plan) and plan[-1] == aligned[-1] and list(plan) == sorted(plan)
    best = _modelled_seconds(plan, lengths, expert_length, solves)
    candidates = aligned[:-1][-10:]  # every subset of the 10 longest distinct sizes, plus the largest
    for r in range(len(candidates) + 1):
        for extra in itertools.combinations(candidates, r):
            other = (*extra, aligned[-1])
            assert _modelled_seconds(other, lengths, expert_length, solves) >= best - 1e-9


def test_bucket_plan_adds_buckets_as_solving_outweighs_compiling():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 1000, size=40)  # ~20k transitions
    few = R.plan_buckets(lengths, 1000, backend="cpu")
    many = R.plan_buckets(np.repeat(lengths, 50), 1000, backend="cpu")  # same lengths, 50x the episodes
    resolved = R.plan_buckets(lengths, 1000, solves=50, backend="cpu")  # or solved for 50 settings
    assert 1 <= len(few) < len(many) and len(resolved) == len(many)
    assert R.plan_buckets([5, 9, 17], 1000) == (24,)  # tiny data: one compile, padded to the aligned maximum
    assert R.plan_buckets(lengths, 10, backend="cpu") == (int(-(-lengths.max() // 8) * 8),)  # cheap solves
    with pytest.raises(AilotInputError, match="episode lengths"):
        R.plan_buckets([3, 0], 100)


def test_bucketed_stats_follow_the_input_order_and_summarise_convergence():
    """Per-trajectory Sinkhorn stats come back in input order although buckets are solved largest first; the
    summary a sweep records counts the unconverged problems (an epsilon too small for max_iterations)."""
    rng = np.random.default_rng(3)
    trajs = [walk(rng, t) for t in (70, 12, 40, 9, 66, 25)]
    expert = walk(rng, 50)
    rewards, stats = R.ailot_rewards_bucketed(trajs, [expert], buckets=(16, 48, 72), epsilon=EPS,
                                              return_info=True)
    assert stats.n_iters.shape == (len(trajs), 1)
    for i, t in enumerate(trajs):  # each alone, at its own length: the same iterations
        _, alone = R.ailot_rewards(t[None], [len(t)], expert[None], [len(expert)], epsilon=EPS, return_info=True)
        assert stats.n_iters[i, 0] == alone.n_iters[0, 0]
    plain = R.ailot_rewards_bucketed(trajs, [expert], buckets=(16, 48, 72), epsilon=EPS)
    for a, b in zip(rewards, plain):
        np.testing.assert_array_equal(a, b)  # asking for the stats changes no reward
    assert len(set(stats.n_iters[:, 0].tolist())) > 1  # a shuffled order would show
    easy = stats.summary()
    assert easy == {"problems": 6, "converged": 1.0, "iterations_median": float(np.median(stats.n_iters)),
                    "iterations_max": float(stats.n_iters.max())}
    _, hard = R.ailot_rewards_bucketed(trajs, [expert], buckets=(72,), epsilon=1e-4, max_iterations=20,
                                       return_info=True)
    assert hard.summary()["converged"] < 0.5 and hard.summary()["iterations_max"] == 20


def test_unconverged_ailot_settings_are_warned_about(caplog):
    import logging

    from ailot.pipeline import log_sinkhorn

    summary = {"problems": 40, "converged": 0.5, "iterations_median": 1000.0, "iterations_max": 1000.0}
    with caplog.at_level(logging.INFO, logger="ailot.pipeline"):
        log_sinkhorn({"labeller": "ailot", "epsilon": 1e-4}, summary)
        log_sinkhorn({"labeller": "ailot", "epsilon": 1e-2}, {**summary, "converged": 1.0})
        log_sinkhorn({"labeller": "otr"}, summary)  # OTR stops at 100 iterations by design
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in levels] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "converged on 50% of 40 problems" in levels[0][1] and "epsilon=0.0001" in levels[0][1]


def test_calibration_solves_run_exactly_the_planned_iterations():
    """benchmarks/calibrate_plan.py fits the plan's constants to solves of a fixed iteration count; a solve that
    stopped early (converged, or diverged under momentum) would make every constant too small."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_plan.py"
    spec = importlib.util.spec_from_file_location("calibrate_plan", path)
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    rng = np.random.default_rng(0)
    for length, expert_length in ((16, 40), (48, 24)):
        args = calibrate.problems(2, length, expert_length, D, rng)
        for iterations in (calibrate.SHORT, calibrate.LONG):
            rewards, stats = calibrate.solve(args, iterations, chunk=2)
            assert np.all(stats.n_iters == iterations) and np.all(np.isfinite(rewards))
    assert calibrate.SHORT == R.PLANNED_ITERATIONS and calibrate.LONG > calibrate.SHORT


def test_bucketed_rejects_buckets_too_short_for_a_trajectory():
    rng = np.random.default_rng(15)
    trajs, expert = [walk(rng, 10), walk(rng, 70)], walk(rng, 40)
    with pytest.raises(AilotInputError, match="buckets"):
        R.ailot_rewards_bucketed(trajs, [expert], buckets=(32, 64), epsilon=EPS)


# ---------------------------------------------------------------------------------------------------- OTR


def test_otr_rewards_follow_otr():
    rng = np.random.default_rng(12)
    d = 6
    expert = walk(rng, 40, d) + 3.0  # off the origin, so cosine similarity is informative
    other = walk(rng, 40, d) - 3.0
    half = np.concatenate([expert[:20], other[20:]])  # follows each expert for half of the time
    x, lens = pad([expert.copy(), walk(rng, 40, d) - 3.0, expert[:25], half], 40)
    r, stats = R.otr_rewards(x, lens, expert[None], [40], return_info=True)
    assert np.isfinite(r).all() and (r[2, 25:] == 0).all()
    assert r[0].sum() > 1.2 * r[1].sum()  # expert copy > unrelated random walk
    assert r[0].mean() == pytest.approx(R.OTR_ALPHA, rel=0.05)  # a copy costs ~0: reward ~alpha
    assert (stats.n_iters <= R.OTR_MAX_ITERATIONS).all()
    # formula: alpha * exp(-beta / obs_dim * Ta * sum_j P_ij C_ij) on the cosine cost, uniform marginals
    cost = R.cosine_cost(jnp.asarray(x[1]), jnp.asarray(expert))
    a, b = R.marginals(40, 40, 0, 40, 40)
    plan, _ = R.solve_ot(cost, a, b, epsilon=R.OTR_EPSILON, threshold=R.OTR_THRESHOLD,
                         max_iterations=R.OTR_MAX_ITERATIONS)
    want = R.OTR_ALPHA * np.exp(-R.OTR_BETA / d * 40 * np.asarray(jnp.sum(plan * cost, 1)))
    np.testing.assert_allclose(r[1], want, rtol=1e-4)
    # several experts: OTR keeps the expert with the largest summed reward (aggregate_top_k, k=1)
    both = R.otr_rewards(x, lens, np.stack([expert, other]), [40, 40])
    only_e = R.otr_rewards(x, lens, expert[None], [40])
    only_o = R.otr_rewards(x, lens, other[None], [40])
    for i in range(4):
        best = only_e[i] if only_e[i].sum() >= only_o[i].sum() else only_o[i]
        np.testing.assert_allclose(both[i], best, rtol=1e-4, atol=1e-6)
    assert not np.allclose(both[3], np.maximum(only_e[3], only_o[3]), rtol=1e-2)  # not a per-state max


# ----------------------------------------------------------------------------------------------- bad input

_X = np.zeros((2, 16, 3), np.float32)
_Y = np.zeros((1, 16, 3), np.float32)
_NAN = _X.copy()
_NAN[1, 4, 0] = np.nan


@pytest.mark.parametrize("args, kwargs, match", [
    ((_X, [16, 16], np.zeros((1, 16, 4)), [16]), {}, "dimension"),
    ((_X[0], [16], _Y, [16]), {}, "rank"),
    ((_X, [16, 16], _Y[0], [16]), {}, "rank"),
    ((_X, [16, 17], _Y, [16]), {}, r"agent_lengths\[1\].*17"),
    ((_X, [0, 16], _Y, [16]), {}, r"agent_lengths\[0\]"),
    ((_X, [16, 16], _Y, [20]), {}, r"expert_lengths\[0\]"),
    ((_X, [16], _Y, [16]), {}, "agent_lengths"),
    ((_X, [16, 16.5], _Y, [16]), {}, "integers"),
    ((_NAN, [16, 16], _Y, [16]), {}, "NaN.*trajectory 1, step 4"),
    ((_X, [16, 16], np.full((1, 16, 3), np.inf), [16]), {}, "expert embeddings.*NaN or inf"),
    ((_X, [16, 16], _Y, [16]), {"k": 0}, "k"),
    ((_X, [16, 16], _Y, [16]), {"k": 1.5}, "k"),
    ((_X, [16, 16], _Y, [16]), {"epsilon": 0.0}, "epsilon"),
    ((_X, [16, 16], _Y, [16]), {"epsilon": -1e-3}, "epsilon"),
    ((_X, [16, 16], _Y, [16]), {"tau": 0.0}, "tau"),
    ((_X, [16, 16], _Y, [16]), {"max_iterations": 0}, "max_iterations"),
    ((_X, [16, 16], _Y, [16]), {"chunk_size": 0}, "chunk_size"),
    ((_X, [16, 16], _Y, [16]), {"expert_mode": "mean"}, "expert_mode"),
    ((_X, [16, 16], _Y, [16]), {"momentum": 2.0}, "momentum"),
    ((_X, [16, 16], _Y, [16]), {"momentum": 0}, "momentum"),
    ((_X, [16, 16], _Y, [16]), {"momentum": True}, "momentum"),
    ((_X, [16, 16], _Y, [16]), {"momentum": "fast"}, "momentum"),
])
def test_bad_input_raises_before_any_solve(args, kwargs, match):
    before = R.sinkhorn_batch._cache_size()
    with pytest.raises(AilotInputError, match=match):
        R.ailot_rewards(*args, **kwargs)
    assert R.sinkhorn_batch._cache_size() == before  # nothing was traced, let alone solved


def test_nan_in_padding_is_fine_and_otr_validates_too():
    x = _NAN.copy()
    r = R.ailot_rewards(x, [16, 4], _Y + 1.0, [16], epsilon=EPS)  # the NaN sits past agent 1's length
    assert np.isfinite(r).all() and (r[1, 4:] == 0).all()
    with pytest.raises(AilotInputError, match="observations.*NaN"):
        R.otr_rewards(_NAN, [16, 16], _Y, [16])
    with pytest.raises(AilotInputError, match="beta"):
        R.otr_rewards(_X, [16, 16], _Y, [16], beta=-5.0)
    with pytest.raises(AilotInputError, match="trajectory 1"):
        R.ailot_rewards_bucketed([np.ones((3, 3)), np.ones((0, 3))], [np.ones((5, 3))])
