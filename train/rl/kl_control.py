"""KL coefficient controllers: fixed, or adaptive toward a target KL (Ziegler et al. 2019).

Adaptive rule: e = clip(KL / target − 1, −0.2, 0.2); β ← β · (1 + e · n / horizon), where
n is the number of samples the KL was measured on. Too much KL raises β, too little lowers it.
The state (β) is saved in checkpoints so a resumed run continues with the same coefficient.
"""
from __future__ import annotations

from dataclasses import dataclass

ERROR_CLIP = 0.2


@dataclass
class KLController:
    value: float
    target: float | None = None  # None: fixed coefficient
    horizon: int = 10_000

    def __post_init__(self):
        if self.value < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.value}")
        if self.target is not None and self.target <= 0:
            raise ValueError(f"target_kl must be > 0, got {self.target}")
        if self.horizon < 1:
            raise ValueError(f"kl_horizon must be >= 1, got {self.horizon}")

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, current_kl: float, n_samples: int) -> float:
        """Move β after a step whose mean (per-sequence) KL was `current_kl`; returns the new β."""
        if self.adaptive:
            error = min(max(current_kl / self.target - 1.0, -ERROR_CLIP), ERROR_CLIP)
            self.value *= 1.0 + error * n_samples / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = float(state["value"]), state.get("target"), int(state["horizon"])
