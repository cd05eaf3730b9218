"""workloads/bert/recipe.py and the LAMBs: MLPerf BERT's recipe as the reference and the rules define it.

The expected values are computed here by hand from the reference's formulas (optimization.py, lamb_optimizer.py
of mlcommons/training and training_results; training_rules.adoc), not read back from the code under test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_bert_data import _siblings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
(recipe,) = _siblings("recipe")

LR, B1, B2, EPS, WD = 0.05, 0.8, 0.95, 1e-6, 0.1


def reference_lamb(w, g, m, v, t, *, decayed):
    """One update of the reference's LAMBOptimizer._resource_apply_dense (bias-corrected with beta powers; the
    decay and the layer adaptation only where the variable is not excluded)."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    update = (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS)
    ratio = 1.0
    if decayed:
        update = update + WD * w
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return w - ratio * LR * update, m, v


def _tensors():
    rng = np.random.default_rng(4)
    return rng.normal(0, 1, (4, 3)), 3.0 * rng.normal(0, 1, (3,)), [rng.normal(0, 1, (4, 3)) for _ in range(3)], \
        [rng.normal(0, 1, (3,)) for _ in range(3)]


def _by_hand():
    kernel, bias, kernel_grads, bias_grads = _tensors()
    state = {"k": (kernel, 0 * kernel, 0 * kernel), "b": (bias, 0 * bias, 0 * bias)}
    for t in (1, 2, 3):
        state["k"] = reference_lamb(*state["k"][:1], kernel_grads[t - 1], *state["k"][1:], t, decayed=True)
        state["b"] = reference_lamb(*state["b"][:1], bias_grads[t - 1], *state["b"][1:], t, decayed=False)
    return state["k"][0], state["b"][0]


def test_torch_lamb_adapts_only_the_decayed_tensors():
    import torch

    (lamb,) = _siblings("lamb")
    kernel, bias, kernel_grads, bias_grads = _tensors()
    k = torch.nn.Parameter(torch.tensor(kernel))
    b = torch.nn.Parameter(torch.tensor(bias))
    opt = lamb.Lamb([{"params": [k], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}],
                    lr=LR, betas=(B1, B2), eps=EPS)
    for t in range(3):
        k.grad, b.grad = torch.tensor(kernel_grads[t]), torch.tensor(bias_grads[t])
        opt.step()
    want_k, want_b = _by_hand()
    np.testing.assert_allclose(k.detach().numpy(), want_k, rtol=1e-10)
    np.testing.assert_allclose(b.detach().numpy(), want_b, rtol=1e-10)


def test_keras_lamb_adapts_only_the_decayed_tensors():
    import keras

    (optim,) = _siblings("keras_optim")
    kernel, bias, kernel_grads, bias_grads = _tensors()
    k = keras.Variable(kernel.astype("float64"), dtype="float64", name="kernel")
    b = keras.Variable(bias.astype("float64"), dtype="float64", name="bias")
    opt = optim.Lamb(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS, weight_decay=WD)
    opt.exclude_from_weight_decay(var_list=[b])
    opt.build([k, b])
    for t in range(3):
        opt.apply_gradients([(keras.ops.convert_to_tensor(kernel_grads[t]), k),
                             (keras.ops.convert_to_tensor(bias_grads[t]), b)])
    want_k, want_b = _by_hand()
    np.testing.assert_allclose(np.asarray(k.numpy()), want_k, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(b.numpy()), want_b, rtol=1e-6)


def test_schedule_is_the_references_polynomial_decay_with_warmup():
    lr = recipe.reference_lr
    # Warm-up from step 0 (lr 0 at the first update, as global_step starts at 0), then linear decay to 0.
    assert lr(0, base_lr=1e-3, total_steps=100, warmup_steps=10) == 0.0
    assert lr(5, base_lr=1e-3, total_steps=100, warmup_steps=10) == pytest.approx(1e-3 * 5 / 10)
    assert lr(10, base_lr=1e-3, total_steps=100, warmup_steps=10) == pytest.approx(1e-3 * (1 - 10 / 100))
    assert lr(100, base_lr=1e-3, total_steps=100, warmup_steps=10) == 0.0
    assert lr(150, base_lr=1e-3, total_steps=100, warmup_steps=10) == 0.0
    # start_warmup_step shifts the warm-up: NVIDIA's v3.1 recipe starts 200000 steps into a 200330-step ramp.
    assert lr(0, base_lr=2e-3, total_steps=700, warmup_steps=200330, start_warmup_step=-200000) == pytest.approx(
        2e-3 * 200000 / 200330)
    assert lr(400, base_lr=2e-3, total_steps=700, warmup_steps=200330, start_warmup_step=-200000) == pytest.approx(
        2e-3 * (1 - 400 / 700))
    assert lr(50, base_lr=1e-3, total_steps=100, power=2.0) == pytest.approx(1e-3 * 0.25)
    assert lr(50, base_lr=1e-3, total_steps=100, warmup_steps=0) == pytest.approx(0.5e-3)


def test_eval_every_the_rules_samples():
    # FLOOR(0.05 * (230.23 * GBS + 3e6), 25000): 4608 -> 203,045 -> 200,000 (NVIDIA v3.1's EVAL_ITER_SAMPLES).
    assert recipe.eval_interval_samples(4608) == 200_000
    assert recipe.eval_interval_samples(3072) == 175_000
    assert recipe.eval_interval_samples(256) == 150_000
    due = [s for s in range(1, 200) if recipe.eval_due((s - 1) * 4608, s * 4608, 200_000)]
    assert due[:3] == [44, 87, 131]  # the first steps whose samples pass 200k, 400k, 600k
    assert not recipe.eval_due(0, 4608, 200_000)  # skipping 0


def test_published_recipes_name_their_source_and_fit_the_rules():
    assert set(recipe.RECIPES) == {"nvidia-dgxh100-8x8", "google-tpu-v4-128"}
    systems = " ".join(r.system for r in recipe.RECIPES.values())
    assert "GPU" in systems and "TPU" in systems
    for r in recipe.RECIPES.values():
        assert r.source.startswith("mlcommons/training_results_v") and r.optimizer == "lamb"
        assert r.preset == "large" and r.target_accuracy == 0.720
        assert r.flags()["start_warmup_step"] == r.start_warmup_step
    with pytest.raises(ValueError, match="unknown recipe 'x': choose one of nvidia-dgxh100-8x8, google-tpu-v4-128"):
        recipe.get_recipe("x")


def _facts(**overrides):
    facts = dict(data_format="hdf5", seq_len=512, max_predictions=76, eval_format="hdf5", eval_samples=10_000,
                 init_checkpoint=True, preset="large", vocab_size=30522, optimizer="lamb", target_accuracy=0.72,
                 eval_interval_samples=200_000, global_batch=4608)
    facts.update(overrides)
    return recipe.RunFacts(**facts)


def test_closed_only_when_nothing_differs_and_open_says_why():
    assert recipe.conformance(_facts()).division == "closed"
    ours = recipe.conformance(_facts(data_format="ernie", seq_len=128, max_predictions=20, eval_format=None,
                                     eval_samples=512, init_checkpoint=False, preset="tiny", optimizer="adamw",
                                     eval_interval_samples=32_000, global_batch=32))
    assert ours.division == "open"
    kinds = [d.split(":")[0] for d in ours.differences]
    assert kinds == ["data", "eval set", "checkpoint", "model", "optimizer", "eval cadence"]
    for field, value, kind in (("init_checkpoint", False, "checkpoint"), ("eval_samples", 9_999, "eval set"),
                               ("target_accuracy", 0.70, "target"), ("data_format", "ernie", "data")):
        differences = recipe.conformance(_facts(**{field: value})).differences
        assert [d.split(":")[0] for d in differences] == [kind]


def test_olympic_score_drops_the_fastest_and_slowest():
    times = [100.0, 90.0, 110.0, 95.0, 105.0, 102.0, 98.0, 101.0, 99.0, 200.0]
    score = recipe.olympic_score(times)
    assert score.olympic_mean_s == pytest.approx(sum(sorted(times)[1:-1]) / 8)
    assert score.spread_s == (90.0, 200.0) and score.why_invalid is None
    one_failed = recipe.olympic_score(times[:-1] + [None])
    assert one_failed.olympic_mean_s == pytest.approx(sum(sorted(times[:-1])[1:]) / 8)
    assert recipe.olympic_score(times[:-2] + [None, None]).why_invalid == "2 runs did not converge, the rules allow 1"
    assert recipe.olympic_score([100.0]).why_invalid == "1 run(s), the rules need 10"


# ---------------------------------------------------------------------------------------------- the log


def _write_run_log(out, *, division, optimizer="lamb", accuracy=0.7215):
    """The log a run writes, through mlperf.MLPerfLogger as both trainers call it: opening (recipe keys), run_start
    before the data, eval_samples once the eval set is read, blocks and evals at the rules' cadence, train_samples
    (samples to converge) and run_stop."""
    import argparse

    (mlperf,) = _siblings("mlperf")
    r = recipe.get_recipe("nvidia-dgxh100-8x8")
    args = argparse.Namespace(seed=1, seq_len=512, max_predictions=76, clip_grad_norm=1.0, **{**r.flags(), "optimizer": optimizer})
    log = mlperf.MLPerfLogger(out)
    log.open_run(args, platform="8xH100", accumulation=1, division=division)
    log.samples(eval=recipe.EVAL_SET_SAMPLES)
    interval, samples = recipe.eval_interval_samples(r.global_batch), 0
    log.start("block_start", metadata={"samples_count": 0})
    for step in range(1, 200):
        before, samples = samples, step * r.global_batch
        if recipe.eval_due(before, samples, interval):
            log.end("block_stop", metadata={"samples_count": samples})
            log.start("eval_start", metadata={"epoch_num": samples})
            log.event("eval_accuracy", 0.5 if samples < 3 * interval else accuracy, metadata={"epoch_num": samples})
            log.end("eval_stop", metadata={"epoch_num": samples})
            if samples >= 3 * interval:
                break
            log.start("block_start", metadata={"samples_count": samples})
    log.samples(train=samples)
    log.end("run_stop", metadata={"status": "success"})
    log.close()
    return out / "mlperf.log"


def _check(path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                           "--ruleset", recipe.RULESET, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=path.parent)  # the checker writes compliance_checker.log where it runs


def test_a_conformant_run_log_passes_the_closed_bert_checker(tmp_path):
    closed = _check(_write_run_log(tmp_path / "closed", division="closed"))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "SUCCESS" in closed.stdout + closed.stderr
    # The checker is not a formality: AdamW keys, or a run that never reaches 0.720, fail the closed rules.
    adamw = _check(_write_run_log(tmp_path / "adamw", division="closed", optimizer="adamw"))
    assert adamw.returncode != 0 and "opt_lamb_beta_1" in adamw.stdout + adamw.stderr
    short = _check(_write_run_log(tmp_path / "short", division="closed", accuracy=0.71))
    assert short.returncode != 0
    assert _check(_write_run_log(tmp_path / "open", division="open", optimizer="adamw")).returncode == 0
