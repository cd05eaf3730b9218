"""bf16 weights for compute, fp32 master copies for the optimizer: mixed precision for CPUs.

On a CPU with AVX512-BF16 a bf16 matmul is about 3x an fp32 one, but autocast casts every activation to
bf16 before each matmul and every gradient back after it, one copy per op, which eats most of the
gain (a 4096x256x1024 linear layer, forward and backward, measured on this project's CPU: fp32 153 ms,
autocast 122 ms, bf16 weights and activations 82 ms). So on CPUs the model itself holds bf16 weights
and computes in bf16, while the optimizer updates fp32 copies: gradients are cast up once per step,
the updated weights cast down once per step. Updates smaller than bf16's resolution still accumulate
in the fp32 copy, which is why the copy is kept.
"""

from __future__ import annotations

import torch
from torch import nn


class MasterWeights:
    """Turns `model` to bf16 and keeps fp32 copies of its parameters for the optimizer to own."""

    def __init__(self, model: nn.Module) -> None:
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [nn.Parameter(p.detach().clone().float()) for p in model.parameters()]
        model.to(torch.bfloat16)  # floating-point tensors only: the integer position-id buffers stay
        self.model_params = list(model.parameters())

    def grads_to_master(self) -> None:
        """Hand the model's bf16 gradients to the fp32 copies (and free them on the model)."""
        for master, param in zip(self.params, self.model_params):
            master.grad = None if param.grad is None else param.grad.float()
            param.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        """Copy the updated fp32 weights into the model, rounding to bf16."""
        torch._foreach_copy_(self.model_params, self.params)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state with fp32 parameters: a checkpoint loads into an fp32 or a bf16 model alike."""
        state = model.state_dict()
        state.update({name: master.detach().clone() for name, master in zip(self.names, self.params)})
        return state

    @torch.no_grad()
    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(state)
        for name, master in zip(self.names, self.params):
            master.copy_(state[name])
