"""The pieces of the PyTorch BERT trainer's CPU step (issue 13, item 5): cpu_dropout.py's cheap dropout
masks, PretrainingStep (the loss inside the compiled module) and the full-head FLOP count the CPU
benchmark's flop_ratio divides by. End-to-end training runs are in test_bert_torch.py."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BERT_DIR = Path(__file__).resolve().parents[2] / "workloads" / "bert"


@pytest.fixture(scope="module")
def mods():
    """Workload modules imported as the trainer imports them (its directory on sys.path), kept importable
    while this module's tests run (torch.compile re-imports what it traces), then taken out of sys.modules,
    where another workload's module of the same name may live."""
    stems = {p.stem for p in BERT_DIR.glob("*.py")}
    saved = {n: sys.modules.pop(n) for n in stems if n in sys.modules}
    sys.path.insert(0, str(BERT_DIR))
    try:
        yield [importlib.import_module(n) for n in ("cpu_dropout", "presets", "torch_model", "flops")]
    finally:
        sys.path.remove(str(BERT_DIR))
        for n in stems:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def test_masks_drop_p_and_keep_the_mean(mods):
    cpu_dropout = mods[0]
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = cpu_dropout.mask_dropout(x, 0.1)
    # 1e6 Bernoulli(0.1) draws: the standard deviation of the dropped fraction is 3e-4.
    assert abs((y == 0).float().mean().item() - 0.1) < 2e-3
    assert abs(y.mean().item() - 1.0) < 3e-3, "kept values scaled by the exact keep probability"
    threshold, scale = cpu_dropout.threshold_and_scale(0.1)
    assert threshold == 6554 and y.unique().tolist() == [0.0, pytest.approx(scale)]
    torch.manual_seed(0)
    assert torch.equal(cpu_dropout.mask_dropout(x, 0.1), y), "seeded the same, the same mask"
    assert cpu_dropout.mask_dropout(x, 0.0) is x
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        cpu_dropout.MaskDropout(1.0)


def test_compiled_mask_matches_eager_and_is_not_redrawn_in_the_backward(mods):
    """Compiled, the custom op draws from the same generator (seeded: the same mask as eager), and the
    backward reuses the forward's mask: the gradient is zero exactly where the output was dropped."""
    cpu_dropout = mods[0]
    fn = torch.compile(lambda t: cpu_dropout.mask_dropout(t, 0.25) * 2.0)
    x = torch.rand(64, 257) + 0.5
    torch.manual_seed(3)
    eager = cpu_dropout.mask_dropout(x, 0.25) * 2.0
    xc = x.clone().requires_grad_()
    torch.manual_seed(3)
    compiled = fn(xc)
    torch.testing.assert_close(compiled, eager)
    compiled.sum().backward()
    _, scale = cpu_dropout.threshold_and_scale(0.25)
    torch.testing.assert_close(xc.grad, (compiled != 0).float() * 2.0 * scale)


def test_install_replaces_every_dropout_and_leaves_eval_unchanged(mods):
    cpu_dropout, presets, torch_model, _ = mods
    torch.manual_seed(0)
    model = torch_model.BertPretraining(torch_model.bert_config(presets.get_preset("tiny"))).eval()
    ids = torch.randint(1000, 30000, (2, 16))
    seg, mask = torch.zeros_like(ids), torch.ones_like(ids)
    mask[1, 12:] = 0  # padding: the attention mask reaches the replaced attention function
    positions = torch.tensor([[1, 5], [2, 3]])
    before = model(ids, seg, mask, positions)
    cpu_dropout.install(model)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert model.bert.config._attn_implementation == cpu_dropout.ATTENTION
    for a, b in zip(model(ids, seg, mask, positions), before):
        torch.testing.assert_close(a, b)
    model.train()
    torch.manual_seed(1)
    first = model(ids, seg, mask, positions)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(model(ids, seg, mask, positions)[0], first)
    assert not torch.allclose(model(ids, seg, mask, positions)[0], first), "training draws new masks"


def test_written_out_attention_matches_sdpa(mods):
    """The attention that takes the masks is SDPA's arithmetic: with a drop probability that rounds to no
    drops, it must give SDPA's output, padding mask included."""
    cpu_dropout = mods[0]
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    allowed = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    allowed[1, :, :, 11:] = False
    module = torch.nn.Module()
    module.is_causal = False
    module.training = True
    got, _ = cpu_dropout.attention(module, q, k, v, allowed, dropout=1e-6)  # rounds to threshold 0
    want, _ = sdpa_attention_forward(module, q, k, v, allowed, dropout=0.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_pretraining_step_is_the_model_and_its_loss(mods):
    _, presets, torch_model, _ = mods
    torch.manual_seed(0)
    model = torch_model.BertPretraining(torch_model.bert_config(presets.get_preset("tiny"), dropout=0.0))
    batch = {"input_ids": torch.randint(1000, 30000, (2, 16)), "segment_ids": torch.zeros(2, 16, dtype=torch.long),
             "input_mask": torch.ones(2, 16, dtype=torch.long), "masked_lm_positions": torch.tensor([[1, 5], [2, 0]]),
             "masked_lm_ids": torch.tensor([[7, 9], [11, 0]]), "masked_lm_weights": torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
             "next_sentence_labels": torch.tensor([0, 1])}
    step = torch_model.PretrainingStep(model, upcast=True)
    assert list(step.parameters()) == list(model.parameters())
    mlm, nsp = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["masked_lm_positions"])
    want = torch_model.pretraining_loss(mlm, nsp, batch, 3.0, 2.0)
    torch.testing.assert_close(step(batch, 3.0, 2.0), want)


def test_full_head_flops_count_the_vocabulary_head_at_every_position(mods):
    _, presets, _, flops = mods
    mini = presets.get_preset("mini")
    full, gathered = flops.full_head_flops_per_sequence(mini, 128), flops.flops_per_sequence(mini, 128, 20)
    assert round(full / 1e9, 2) == 8.68 and round(gathered / 1e9, 2) == 3.57
    assert round(full / gathered, 2) == 2.43
