"""An AMC-style reinforcement-learning agent (He et al., 2018): DDPG over the groups in order.

One episode is one plan. The agent walks the prunable groups in graph order; at each group
it sees a state (index, layer type, channels, share of MACs, share of latency, previous
action, MACs already removed and still prunable) and its actor outputs the group's ratio.
When the config has a latency budget, each action is clamped (as AMC clamps to its FLOPs
budget) so that the plan can still meet it with the remaining groups at the maximum ratio;
latency is predicted from MACs through a line fitted to the run's measured speed-ups. The
episode's reward is ``Scoring.score`` of the trial (accuracy and measured latency with the
constraints as penalties; a candidate stopped by the proxy is scored with its proxy accuracy).

Why DDPG rather than PPO: a pruning search affords tens of episodes. DDPG is off-policy, so
every evaluated plan -- including those of an earlier session or another agent in the same
study -- is training data, and the agent is rebuilt on resume from the study's finished
trials alone. PPO would discard its data after each update. Critic targets are the episode's
reward minus the mean reward (AMC's baseline), with gamma = 1 as the reward arrives at the end.

Every proposal is a deterministic function of (seed, finished trials): each episode's
training round and exploration noise draw from generators seeded by (seed, episode), and the
agent learns from the study's finished trials in trial-number order (each one as the study is
told it, and on resume every earlier one before the first proposal). So a resumed run proposes
what an uninterrupted one would have. The learning curve goes to ``<run>/rl_curve.json``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from torch import nn

from autoprune.files import atomic_write_json
from autoprune.plan import GroupPlan, PruningPlan
from autoprune.records import TrialRecord, TrialState
from autoprune.search.agent import AgentContext, PlanAgent
from autoprune.search.study import records_of

STATE_SIZE = 9
CURVE_FILE = "rl_curve.json"


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One finished plan as DDPG transitions: states, actions (0..1) and the reward."""

    states: np.ndarray
    actions: np.ndarray
    reward: float
    trial: int


def _mlp(inputs: int, out: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)]
    return nn.Sequential(*layers, *([out] if out is not None else []))


class LatencyModel:
    """Latency as a share of dense, predicted from the MAC share: ``a + b * macs`` fitted on measurements.

    Before three measurements exist it assumes latency is proportional to MACs (a=0, b=1).
    """

    def __init__(self, pairs: list[tuple[float, float]]) -> None:
        self.a, self.b = 0.0, 1.0
        if len(pairs) >= 3:
            x = np.array([p[0] for p in pairs])
            y = np.array([p[1] for p in pairs])
            if np.ptp(x) > 1e-6:
                b, a = np.polyfit(x, y, 1)
                if b > 0:
                    self.a, self.b = float(a), float(b)

    def __call__(self, mac_fraction: float) -> float:
        return self.a + self.b * mac_fraction

    def mac_budget(self, latency_fraction: float) -> float:
        """The MAC share at which predicted latency equals ``latency_fraction``."""
        return (latency_fraction - self.a) / self.b


class DDPGAgent(PlanAgent):
    """AMC-style DDPG agent: one ratio per group, groups in graph order (see module docstring)."""

    WARMUP = 6           # episodes of pure exploration before the actor is used
    SIGMA = 0.5          # initial exploration noise (in action units, 0..1)
    DECAY = 0.9          # noise multiplier per episode after warm-up
    MIN_SIGMA = 0.05
    UPDATES_PER_EPISODE = 40
    BATCH = 64

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        space, seed = context.space, context.seed
        self.seed = seed
        grid = space.ratio_grid
        self.low, self.high = grid[0], grid[-1]
        self.shares = space.mac_shares()
        self.max_channels = max((g.channels for g in space.groups), default=1)
        self.episodes: list[Episode] = []
        self.curve: list[dict[str, float]] = []
        self.measured: list[tuple[float, float]] = []  # (MAC share, latency share) of measured trials
        with torch.random.fork_rng():  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(seed)
            self.actor = _mlp(STATE_SIZE, nn.Sigmoid())
            self.critic = _mlp(STATE_SIZE + 1, None)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=5e-4)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=1e-3)
        self._learned: set[int] = set()  # trial numbers already observed

    # -- state and budget ------------------------------------------------------------------
    def _budget(self) -> float | None:
        """The latency budget as a share of dense latency (None: no budget)."""
        s = self.context.scoring
        if s.max_latency_ms is None or not s.dense.get("latency"):
            return None
        return s.max_latency_ms / s.dense["latency"]

    def _state(self, index: int, prev_action: float, keep: dict[str, float]) -> np.ndarray:
        group = self.space.groups[index]
        n = len(self.space.groups)
        done = 1.0 - self.space.mac_fraction(keep)
        rest = sum(self.shares[g.name] for g in self.space.groups[index + 1:])
        share = self.shares[group.name]
        return np.array([index / max(n - 1, 1), float("Conv" in group.root_type), float(group.root_type == "Linear"),
                         group.channels / self.max_channels, share,
                         share,  # latency share: estimated from MACs (no per-layer timing is measured)
                         prev_action, done, rest], dtype=np.float32)

    def _ratio(self, action: float) -> float:
        return self.space.snap_ratio(self.low + action * (self.high - self.low))

    def _action(self, ratio: float) -> float:
        return 0.0 if self.high == self.low else (ratio - self.low) / (self.high - self.low)

    def _min_ratio(self, index: int, keep: dict[str, float], budget: float | None) -> float:
        """The smallest grid ratio for group ``index`` that keeps the budget reachable."""
        if budget is None:
            return self.low
        target = LatencyModel(self.measured).mac_budget(budget)
        rest = {g.name: self.space.kept_fraction(g.name, GroupPlan(ratio=self.high, structure="channel"))
                for g in self.space.groups[index + 1:]}
        name = self.space.groups[index].name
        for ratio in self.space.ratio_grid:
            trial_keep = {**keep, name: self.space.kept_fraction(name, GroupPlan(ratio=ratio, structure="channel")),
                          **rest}
            if self.space.mac_fraction(trial_keep) <= target:
                return ratio
        return self.high

    def _walk(self, choose, clamp: bool = True) -> tuple[PruningPlan, np.ndarray, np.ndarray]:
        """Walk the groups; ``choose(index, state) -> action`` in 0..1, clamped to the budget if ``clamp``."""
        budget = self._budget() if clamp else None
        keep: dict[str, float] = {}
        states, actions, groups = [], [], {}
        prev = 0.0
        for i, group in enumerate(self.space.groups):
            state = self._state(i, prev, keep)
            ratio = max(self._ratio(choose(i, state)), self._min_ratio(i, keep, budget))
            structure = self.space.default_structure(group.name)
            groups[group.name] = GroupPlan(ratio=ratio, structure=structure)
            keep[group.name] = self.space.kept_fraction(group.name, groups[group.name])
            prev = self._action(ratio)
            states.append(state)
            actions.append(prev)
        return PruningPlan.of(groups), np.stack(states), np.array(actions, dtype=np.float32)

    # -- learning ----------------------------------------------------------------------------
    def _reward(self, record: TrialRecord) -> float:
        accuracy = record.accuracy if record.accuracy is not None else record.proxy
        return self.context.scoring.score(record, accuracy=accuracy)

    def _observe(self, record: TrialRecord) -> None:
        plan = PruningPlan.from_dict(record.plan)
        if set(plan.as_dict()) != set(self.space.names):
            return
        ratios = plan.as_dict()
        _, states, actions = self._walk(lambda i, _s: self._action(ratios[self.space.groups[i].name].ratio),
                                        clamp=False)
        self.episodes.append(Episode(states=states, actions=actions, reward=self._reward(record), trial=record.number))
        if record.speedup and record.state in (TrialState.COMPLETE, TrialState.REJECTED):
            keep = {n: self.space.kept_fraction(n, g) for n, g in ratios.items()}
            self.measured.append((self.space.mac_fraction(keep), 1.0 / record.speedup))
        best = max(e.reward for e in self.episodes)
        self.curve.append({"episode": len(self.episodes), "trial": record.number, "reward": self.episodes[-1].reward,
                           "best_reward": best, "sigma": self._sigma(len(self.episodes) - 1)})

    def _sigma(self, episode: int) -> float:
        if episode < self.WARMUP:
            return 1.0
        return max(self.MIN_SIGMA, self.SIGMA * self.DECAY ** (episode - self.WARMUP))

    def _train(self) -> None:
        """A few DDPG updates on the replay buffer (every episode so far), seeded by the episode count.

        The networks carry over between episodes; because each round's randomness comes from
        (seed, episode), replaying the study's trials on resume rebuilds identical networks.
        """
        if len(self.episodes) < 2:
            return
        states = torch.from_numpy(np.concatenate([e.states for e in self.episodes]))
        actions = torch.from_numpy(np.concatenate([e.actions for e in self.episodes])).unsqueeze(1)
        rewards = np.array([e.reward for e in self.episodes], dtype=np.float32)
        centred = (rewards - rewards.mean()) / (rewards.std() + 1e-6)  # AMC's moving baseline, over the buffer
        targets = torch.from_numpy(np.concatenate([np.full(len(e.actions), c, dtype=np.float32)
                                                   for e, c in zip(self.episodes, centred, strict=True)])).unsqueeze(1)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + len(self.episodes))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny networks: threads only add contention
        try:
            for _ in range(self.UPDATES_PER_EPISODE):
                idx = torch.randint(len(states), (min(self.BATCH, len(states)),), generator=generator)
                s, a, y = states[idx], actions[idx], targets[idx]
                loss = nn.functional.mse_loss(self.critic(torch.cat([s, a], 1)), y)
                self.critic_opt.zero_grad()
                loss.backward()
                self.critic_opt.step()
                policy_loss = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
                self.actor_opt.zero_grad()
                policy_loss.backward()
                self.actor_opt.step()
        finally:
            torch.set_num_threads(threads)
        self.curve[-1]["critic_loss"] = loss.item()

    def _learn(self, finished: Sequence[TrialRecord]) -> None:
        """Observe and train on every finished trial not seen yet, in trial-number order; log the curve."""
        new = sorted((r for r in finished if r.number not in self._learned), key=lambda r: r.number)
        for record in new:
            self._learned.add(record.number)
            self._observe(record)
            self._train()
        if new and self.context.log_dir is not None:
            atomic_write_json(self.context.log_dir / CURVE_FILE, {"agent": "rl (DDPG)", "episodes": self.curve})

    # -- Agent API ---------------------------------------------------------------------------
    def propose(self, finished: Sequence[TrialRecord], pending: Sequence[PruningPlan]) -> PruningPlan:
        self._learn(finished)
        episode = len(self.episodes)
        sigma = self._sigma(episode)
        rng = np.random.default_rng([self.seed, episode])

        def choose(_index: int, state: np.ndarray) -> float:
            with torch.no_grad():
                mean = 0.5 if episode < self.WARMUP else float(self.actor(torch.from_numpy(state)[None])[0, 0])
            for _ in range(100):  # truncated normal on [0, 1], as in AMC
                value = rng.normal(mean, sigma)
                if 0.0 <= value <= 1.0:
                    return value
            return float(np.clip(mean, 0.0, 1.0))

        plan, _, _ = self._walk(choose)
        return plan

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        """Learn from the trial the driver has just told (its record is on it already)."""
        self._learn(records_of(study.get_trials(deepcopy=False)))
