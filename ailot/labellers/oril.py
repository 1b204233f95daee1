"""ORIL (Zolna et al. 2020, "Offline Learning from Demonstrations and Unlabeled Experience"): a discriminator
trained to tell the expert set's states from the agent's, whose logit is the reward.

Sources, as SMODICE's ORIL baseline (github.com/JasonMa2016/SMODICE) unless said otherwise:
- network (discriminator_pytorch.py `Discriminator_SA`, state only): Linear-Tanh-Linear-Tanh-Linear to one logit,
  hidden 256 (configs/oil_observations_default.py `hidden_sizes`); kernels drawn as PyTorch's nn.Linear does
  (biases start at 0, flax's default, where PyTorch draws them too).
  SMODICE's Adam there holds only `self.trunk`, leaving the first layer at its initialisation; we train every layer,
  as the file's plain `Discriminator` (from pytorch-a2c-ppo-acktr-gail) does.
- loss (`update`): binary cross-entropy, expert 1 and agent 0, each averaged over its own batch, plus the gradient
  penalty lambda * (||grad_x D(x)|| - 1)^2 at random mixtures of an expert and an agent input (`compute_grad_pen`).
- reward (`predict_reward`): log D - log(1 - D) with D = sigmoid(logit), i.e. the logit itself (computed as the logit,
  so it stays finite where D rounds to 0 or 1 in float32, past logit ~17); rewards are not normalised afterwards
  (run_oil_observations.py scales only the dataset's rewards). `reward: sigmoid` gives D itself instead, the reward
  R(s) of ORIL's paper and of corax (github.com/ethanluoyc/corax, corax/agents/jax/oril/learning.py).
- observations standardised with the agent data's mean and std (utils.py `dice_dataset`, standardize_obs=True
  there: the statistics of the offline data the discriminator contrasts with the expert), expert states too.
- `input: state_next` scores (s, s') pairs, both halves standardised alike: not in SMODICE, whose discriminator sees
  s (or (s, a)); it lets the reward see the step the agent took, still without actions.
- `pu: true`: the positive-unlabelled loss of ORIL's paper (Eq. 5; the agent data are unlabelled, a mix with prior
  eta of expert-like states), as corax's `oril_pu_loss` (corax/agents/jax/oril/losses.py) writes it:
      eta * E_expert[-log D] + E_agent[-log(1 - D)] - eta * E_expert[-log(1 - D)];
  with `pu_nonnegative` the last two terms (the estimated risk of the negative class) are clipped at 0 as nnPU
  (Kiryo et al. 2017) and PURL (Xu & Denil 2019) do: unclipped, the loss falls without bound (by eta * logit per
  expert state) as expert logits grow wherever agent states do not follow them, i.e. it rewards overfitting.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.labellers.base import Labeller, Setting, check_finite, expert_set, n_experts_setting

# JAX, flax and optax are imported where used, so that reading the registry (config checks) stays light
if TYPE_CHECKING:
    import jax

    from ailot.learners.networks import MLP

CHUNK = 1000  # discriminator updates per dispatch (one lax.scan); a shorter last chunk compiles once more
SCORE_BATCH = 1 << 16  # inputs scored per call, padded to this size so scoring compiles once
STD_FLOOR = 1e-6  # dims with a smaller std are left unscaled (SMODICE adds 1e-10, which blows constant dims up)
# A loss beyond this has diverged: it starts near 2 log 2 + grad_penalty, and BCE this large needs logits of that
# size on the wrong side. Adam with a huge lr (1e30) blows the weights up to ~lr * steps without ever reaching NaN,
# and gives finite rewards of ~1e30 that would overflow the learner.
LOSS_LIMIT = 1e6
DIVERGED_FIX = "lower lr (default 3e-4) or raise grad_penalty (default 10)"


@functools.cache
def _optimizer():
    import optax

    return optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)  # lr is set per run in the optimiser state


def _discriminator(hidden: tuple[int, ...]) -> MLP:
    import flax.linen as nn

    from ailot.learners.networks import MLP, TORCH_LINEAR_INIT

    return MLP((*hidden, 1), activation=nn.tanh, kernel_init=TORCH_LINEAR_INIT)


def _logits(model: MLP, params: Any, x: jax.Array) -> jax.Array:
    return model.apply(params, x)[:, 0]


def discriminator_loss(params: Any, model: MLP, expert_x: jax.Array, agent_x: jax.Array, mix: jax.Array,
                       grad_penalty: jax.Array, eta: jax.Array, pu: bool, nonnegative: bool
                       ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The loss of one batch (expert_x and agent_x [B, d], mixing weights mix [B, 1]) and its parts."""
    import jax
    import jax.numpy as jnp

    e, u = _logits(model, params, expert_x), _logits(model, params, agent_x)
    # -log D = softplus(-logit), -log(1 - D) = softplus(logit): stable for any logit
    if pu:
        negative = jnp.mean(jax.nn.softplus(u)) - eta * jnp.mean(jax.nn.softplus(e))
        if nonnegative:
            negative = jnp.maximum(negative, 0.0)
        bce = eta * jnp.mean(jax.nn.softplus(-e)) + negative
    else:
        bce = jnp.mean(jax.nn.softplus(-e)) + jnp.mean(jax.nn.softplus(u))
    mixed = mix * expert_x + (1.0 - mix) * agent_x
    # each logit depends on its own row only, so the gradient of the sum gives every row's input gradient
    grads = jax.grad(lambda x: jnp.sum(_logits(model, params, x)))(mixed)
    norms = jnp.sqrt(jnp.sum(grads**2, axis=-1) + 1e-12)  # the epsilon keeps the norm differentiable at 0
    gp = grad_penalty * jnp.mean((norms - 1.0) ** 2)
    return bce + gp, (bce, gp, jnp.mean(e), jnp.mean(u))


@functools.lru_cache(maxsize=16)
def _trainer(hidden: tuple[int, ...], batch_size: int, pu: bool, nonnegative: bool, n: int):
    """A jitted `n` updates (one lax.scan); lr, eta and the penalty weight are traced, so a grid over them shares
    one compilation."""
    import jax
    import optax

    model, optimizer = _discriminator(hidden), _optimizer()

    def one_step(carry, key, expert, agent, grad_penalty, eta):
        params, opt_state = carry
        k_e, k_a, k_m = jax.random.split(key, 3)
        expert_x = expert[jax.random.randint(k_e, (batch_size,), 0, expert.shape[0])]
        agent_x = agent[jax.random.randint(k_a, (batch_size,), 0, agent.shape[0])]
        mix = jax.random.uniform(k_m, (batch_size, 1))
        (loss, parts), grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
            params, model, expert_x, agent_x, mix, grad_penalty, eta, pu, nonnegative)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, *parts)

    @jax.jit
    def run(params, opt_state, key, expert, agent, grad_penalty, eta):
        step = functools.partial(one_step, expert=expert, agent=agent, grad_penalty=grad_penalty, eta=eta)
        (params, opt_state), metrics = jax.lax.scan(step, (params, opt_state), jax.random.split(key, n))
        return params, opt_state, metrics

    return run


@functools.lru_cache(maxsize=16)
def _scorer(hidden: tuple[int, ...]):
    import jax

    model = _discriminator(hidden)
    return jax.jit(lambda params, x: _logits(model, params, x))


def _pairs(observations: list[np.ndarray], kind: str) -> np.ndarray:
    """Discriminator inputs of every transition of these episodes (observations [T_i + 1, d] each)."""
    if kind == "state":
        return np.concatenate([o[:-1] for o in observations])
    return np.concatenate([np.concatenate([o[:-1], o[1:]], axis=1) for o in observations])


@dataclass(frozen=True)
class Discriminator:
    """A trained ORIL discriminator: params, the standardisation it was trained with, and what it scores."""

    params: Any
    hidden: tuple[int, ...]
    input: str
    obs_mean: np.ndarray
    obs_std: np.ndarray

    def inputs(self, observations: list[np.ndarray]) -> np.ndarray:
        """Standardised inputs of every transition of these episodes."""
        x = _pairs([(o - self.obs_mean) / self.obs_std for o in observations], self.input)
        return x.astype(np.float32)

    def rewards(self, observations: list[np.ndarray], reward: str = "logit") -> np.ndarray:
        """The reward of every transition of these episodes (observations [T_i + 1, d]): log D - log(1 - D), i.e.
        the logit, or D = sigmoid(logit) with reward="sigmoid"."""
        logits = self.score(self.inputs(observations))
        if reward == "sigmoid":
            return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))).astype(np.float32)  # overflow-free
        return logits

    def score(self, x: np.ndarray) -> np.ndarray:
        score = _scorer(self.hidden)
        out = []
        for start in range(0, len(x), SCORE_BATCH):
            part = x[start:start + SCORE_BATCH]
            padded = np.zeros((SCORE_BATCH, x.shape[1]), np.float32)
            padded[:len(part)] = part
            out.append(np.asarray(score(self.params, padded))[:len(part)])
        return np.concatenate(out).astype(np.float32)


def train_discriminator(setting: dict[str, Any], agent: Episodes, expert: Episodes, seed: int = 0
                        ) -> tuple[Discriminator, dict[str, float]]:
    """Fit the discriminator of one ORIL setting (defaults filled in) on the expert set vs the agent data."""
    import jax
    import jax.numpy as jnp

    s = {**ORIL.defaults(), **setting}
    hidden, kind = tuple(int(h) for h in s["hidden"]), s["input"]
    steps, batch_size = int(s["steps"]), int(s["batch_size"])
    obs_mean, obs_std = _standardisation(agent)
    disc = Discriminator(None, hidden, kind, obs_mean, obs_std)
    expert_x = jnp.asarray(disc.inputs(expert_set(expert, s).observations))
    agent_x = jnp.asarray(disc.inputs(agent.observations))

    key = jax.random.PRNGKey(int(seed))
    init_key, key = jax.random.split(key)
    params = _discriminator(hidden).init(init_key, jnp.zeros((1, agent_x.shape[1]), jnp.float32))
    opt_state = _optimizer().init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(float(s["lr"]), jnp.float32)
    gp, eta = jnp.float32(s["grad_penalty"]), jnp.float32(s["eta"])

    done, last, t0 = 0, None, time.perf_counter()
    while done < steps:
        n = min(CHUNK, steps - done)
        run = _trainer(hidden, batch_size, bool(s["pu"]), bool(s["pu_nonnegative"]), n)
        key, chunk_key = jax.random.split(key)
        params, opt_state, metrics = run(params, opt_state, chunk_key, expert_x, agent_x, gp, eta)
        loss = np.asarray(metrics[0])
        diverged = ~(np.abs(loss) <= LOSS_LIMIT)  # NaN compares False, so it counts too
        if diverged.any():
            at = int(np.argmax(diverged))
            raise AilotInputError("labeller 'oril'", f"its discriminator loss became {loss[at]:.3g} at update "
                                  f"{done + at + 1} of {steps} (it diverged)", DIVERGED_FIX)
        done += n
        last = [float(np.mean(np.asarray(m))) for m in metrics]
    info = {"loss": last[0], "bce": last[1], "grad_penalty": last[2], "expert_logit": last[3],
            "agent_logit": last[4], "steps": float(steps), "train_seconds": time.perf_counter() - t0}
    return Discriminator(params, hidden, kind, obs_mean, obs_std), info


def _standardisation(agent: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the agent data's states (near-constant dims keep std 1)."""
    flat = np.concatenate(agent.states()).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    std = np.where(std < STD_FLOOR, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


class ORIL(Labeller):
    name = "oril"
    seeded: ClassVar[bool] = True  # the discriminator's initialisation and batches follow the sweep seed
    uses_expert_actions: ClassVar[bool] = False  # state-only: the expert set's states, never its actions
    settings = {
        # what the discriminator scores: s (SMODICE's --state true, ORIL's paper) or the pair (s, s')
        "input": Setting("state", "choice", choices=("state", "state_next")),
        # positive-unlabelled loss (ORIL paper Eq. 5); SMODICE's ORIL uses the plain BCE
        "pu": Setting(False, "bool"),
        # log D - log(1 - D) (SMODICE discriminator_pytorch.py predict_reward) or D (ORIL paper, corax)
        "reward": Setting("logit", "choice", choices=("logit", "sigmoid")),
        # PU class prior: the share of expert-like states in the agent data (corax oril_pu_loss gamma=0.5)
        "eta": Setting(0.5, "float", maximum=1.0),
        # clip the PU negative-class risk at 0 (nnPU, Kiryo et al. 2017; PURL, Xu & Denil 2019)
        "pu_nonnegative": Setting(True, "bool"),
        # updates: SMODICE runs 1000 epochs (configs/oil_observations_default.py disc_iterations) over its one
        # 1000-state expert trajectory in batches of 256 (run_oil_observations.py), i.e. 4000 updates
        "steps": Setting(4000, "int"),
        "hidden": Setting((256, 256), "ints"),  # SMODICE configs/oil_observations_default.py hidden_sizes
        "lr": Setting(3e-4),  # SMODICE discriminator_pytorch.py Adam lr
        "batch_size": Setting(256, "int"),  # SMODICE run_oil_observations.py DataLoader batch_size
        "grad_penalty": Setting(10.0, "float", inclusive=True),  # SMODICE discriminator_pytorch.py lambda_
        "n_experts": n_experts_setting(),
    }

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        disc, info = train_discriminator(setting, agent, expert, seed)
        t0 = time.perf_counter()
        reward = {**cls.defaults(), **setting}["reward"]
        rewards = check_finite(cls.name, disc.rewards(agent.observations, reward), DIVERGED_FIX)
        info["score_seconds"] = time.perf_counter() - t0
        wide = rewards.astype(np.float64)
        info["reward_mean"], info["reward_std"] = float(wide.mean()), float(wide.std())
        return rewards, info
