"""LAMB, the layer-wise adaptive optimizer of MLPerf's BERT (You et al. 2019, "Large Batch Optimization
for Deep Learning: Training BERT in 76 minutes"). torch ships no LAMB; this one follows NVIDIA's
FusedLAMB (apex) with bias correction, written with torch's multi-tensor `_foreach` kernels.

Per parameter tensor p with gradient g at step t:
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
    u = (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * p
    p -= lr * (||p|| / ||u|| if both norms are non-zero else 1) * u   where weight decay applies
    p -= lr * u                                                         where it does not

The trust ratio is applied only to the tensors that are decayed, as in MLPerf's reference LAMB
(exclude_from_layer_adaptation defaults to exclude_from_weight_decay: LayerNorm and biases) and in
FusedLAMB: a group adapts when its weight_decay is non-zero, or as its own "trust_ratio" key says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Lamb(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        if lr <= 0.0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            for s in states:
                s["step"] += 1
            step = states[0]["step"]
            beta1, beta2 = group["betas"]

            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

            denominators = torch._foreach_div(exp_avg_sqs, 1 - beta2**step)
            torch._foreach_sqrt_(denominators)
            torch._foreach_add_(denominators, group["eps"])
            updates = torch._foreach_div(exp_avgs, denominators)
            torch._foreach_div_(updates, 1 - beta1**step)
            if group["weight_decay"]:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])

            if not group.get("trust_ratio", group["weight_decay"] > 0):
                torch._foreach_add_(params, updates, alpha=-group["lr"])
                continue
            weight_norms = torch._foreach_norm(params)
            update_norms = torch._foreach_norm(updates)
            for p, update, w_norm, u_norm in zip(params, updates, weight_norms, update_norms):
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss
