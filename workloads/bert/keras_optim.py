"""The BERT pretraining optimizers (AdamW, LAMB) and learning-rate schedule on Keras 3, as train_torch.py.

Backend-neutral (keras.ops only): tf_pretrain.py applies them on TensorFlow, jax_pretrain.py through
`stateless_apply` inside its jitted step on JAX.

- Schedule: MLPerf's reference schedule (recipe.reference_lr): polynomial decay to 0 at the last step,
  after a linear warm-up that starts at start_warmup_step; the first update (k = 0) has rate 0 without one
  shifted: train_torch.py's `lr_lambda` under torch's LambdaLR, step for step.
- Weight decay skips every tensor of rank < 2 (biases, LayerNorm scales and offsets), as in BERT and
  train_torch.py.
- AdamW is `keras.optimizers.AdamW` (decoupled decay, as torch's AdamW; Keras adds epsilon to the
  square root of the uncorrected second moment, torch to the corrected one, which differs only while
  the second moment is tiny).
- LAMB is `keras.optimizers.Lamb` with the decay moved inside the trust ratio, as in the LAMB paper
  (You et al. 2019, algorithm 2), NVIDIA's FusedLAMB and lamb.py: Keras decays the weights separately,
  outside the layer-wise ratio.

The gradient these optimizers receive is already summed over replicas and clipped on its global norm
(tf_pretrain.py does both, as DDP and clip_grad_norm_ do), so Keras's own all-reduce of each step's
gradients is turned off (`_PreReduced`; a tf.distribute hook that the JAX backend never calls: there the
step's gradient is the global batch's, reduced by XLA across the devices).
"""

from __future__ import annotations

import math
from typing import Literal

import keras
from keras import ops

OptimizerName = Literal["adamw", "lamb"]


@keras.saving.register_keras_serializable(package="ernie")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The reference's schedule (recipe.reference_lr): peak * (1 - min(k, total)/total)**power, and while
    k - start_warmup_step < warmup_steps the warm-up peak * (k - start_warmup_step)/warmup_steps instead."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, start_warmup_step: int = 0,
                 power: float = 1.0) -> None:
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.start_warmup_step = start_warmup_step
        self.power = power

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = self.peak * ops.power(1.0 - ops.minimum(step, self.total_steps) / self.total_steps, self.power)
        if not self.warmup_steps:
            return decayed
        since = step - self.start_warmup_step
        return ops.where(since < self.warmup_steps, self.peak * since / self.warmup_steps, decayed)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "start_warmup_step": self.start_warmup_step, "power": self.power}


class _PreReduced:
    """Mixin for a Keras optimizer whose gradients arrive already all-reduced across replicas."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class AdamW(_PreReduced, keras.optimizers.AdamW):
    """keras.optimizers.AdamW over gradients already summed across replicas."""


class Lamb(_PreReduced, keras.optimizers.Lamb):
    """LAMB with the weight decay inside the trust ratio (module docstring), over pre-reduced gradients."""

    def _apply_weight_decay(self, variables):
        """Decay happens in `update_step`, inside the trust ratio, not as Keras's separate decoupled step."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        # 1 - beta**t as -expm1(t log beta): in float32, 1 - 0.999**2 loses 4 digits to cancellation.
        m_hat = ops.divide(m, -ops.expm1(step * math.log(self.beta_1)))
        v_hat = ops.divide(v, -ops.expm1(step * math.log(self.beta_2)))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if not (self.weight_decay and self._use_weight_decay(variable)):
            # No decay, no trust ratio (LayerNorm, biases): MLPerf's reference LAMB and lamb.py.
            self.assign_sub(variable, lr * update)
            return
        update = ops.add(update, ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable))
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        u_norm = ops.sqrt(ops.sum(ops.square(update)))
        trust = ops.where(ops.logical_and(w_norm > 0, u_norm > 0), w_norm / u_norm, 1.0)
        self.assign_sub(variable, trust * lr * update)


def make_optimizer(
    name: OptimizerName,
    variables: list,
    *,
    lr: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    start_warmup_step: int = 0,
    power: float = 1.0,
) -> keras.optimizers.Optimizer:
    """The named optimizer over `variables` with the reference's warm-up/polynomial-decay schedule, built."""
    cls = {"adamw": AdamW, "lamb": Lamb}[name]
    optimizer = cls(
        learning_rate=WarmupLinearDecay(lr, warmup_steps, total_steps, start_warmup_step, power),
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay,
    )
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 2])
    optimizer.build(variables)
    return optimizer
