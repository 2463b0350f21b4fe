"""Generalization measures against hand computations on a 2-2-3 ReLU network, and `method=measures` on a sweep."""

from __future__ import annotations

import json
import math

import pytest
import torch

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process
from overparam.models.zoo import mlp
from overparam.recipes.analysis import generalization as g
from overparam.recipes.analysis.measures import swept_keys

W1 = [[1.0, 2.0], [3.0, -1.0]]
B1 = [0.5, -0.5]
W2 = [[1.0, 0.0], [0.0, 2.0], [0.5, 1.0]]
B2 = [0.0, 0.1, 0.0]
X = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]]
Y = [1, 0, 2, 0]


def tiny(w1=W1, b1=B1, w2=W2, b2=B2):
    model = mlp((2,), 3, widths=[2])
    with torch.no_grad():
        model.fc0.weight.copy_(torch.tensor(w1))
        model.fc0.bias.copy_(torch.tensor(b1))
        model.fc_out.weight.copy_(torch.tensor(w2))
        model.fc_out.bias.copy_(torch.tensor(b2))
    return model.double()


def data():
    return torch.tensor(X, dtype=torch.float64), torch.tensor(Y)


def hand_forward(x):
    pre = [sum(W1[i][k] * x[k] for k in range(2)) + B1[i] for i in range(2)]
    h = [max(0.0, p) for p in pre]
    return pre, h, [sum(W2[j][i] * h[i] for i in range(2)) + B2[j] for j in range(3)]


def test_margins_and_their_percentile_by_hand():
    # Logits by hand: x1 -> (1.5, 5.1, 3.25), x2 -> (2.5, 0.1, 1.25), x3 -> (0, 0.1, 0), x4 -> (3.5, 3.1, 3.25).
    x, y = data()
    found = g.margins(tiny(), x, y)
    assert found.tolist() == pytest.approx([5.1 - 3.25, 2.5 - 1.25, 0.0 - 0.1, 3.5 - 3.25])
    assert g.margin_percentile(found, 10) == pytest.approx(0.1)  # k = max(1, 4 // 10) = 1: the smallest, |-0.1|
    assert g.margin_percentile(found, 50) == pytest.approx(0.25)  # k = 2


def test_norms_path_norm_and_distance_from_init_by_hand():
    x, y = data()
    init = {k: v.detach().clone() for k, v in tiny(w1=[[0.0, 2.0], [3.0, 0.0]], w2=[[1.0, 0.0], [0.0, 0.0], [0.5, 1.0]]).named_parameters()}
    found = g.all_measures(tiny(), init, x, y, samples=2, depth=3)
    fro1, fro2 = 1 + 4 + 9 + 1, 1 + 4 + 0.25 + 1
    # Largest eigenvalue of W^T W for a 2x2 W^T W = [[a, b], [b, c]]: (a + c + sqrt((a - c)^2 + 4 b^2)) / 2.
    spec1 = (10 + 5 + math.sqrt((10 - 5) ** 2 + 4 * 1)) / 2  # W1^T W1 = [[10, -1], [-1, 5]]
    spec2 = (1.25 + 5 + math.sqrt((1.25 - 5) ** 2 + 4 * 0.25)) / 2  # W2^T W2 = [[1.25, 0.5], [0.5, 5]]
    gamma = 0.1
    assert found["parameters"] == 15
    assert found["l2"] == pytest.approx(math.sqrt(fro1 + fro2))
    assert found["log_prod_fro"] == pytest.approx(math.log(fro1 * fro2))
    assert found["log_prod_spec"] == pytest.approx(math.log(spec1 * spec2))
    assert found["fro_over_spec"] == pytest.approx(fro1 / spec1 + fro2 / spec2)
    assert found["inverse_margin"] == pytest.approx(1 / gamma ** 2)
    assert found["log_prod_spec_over_margin"] == pytest.approx(math.log(spec1 * spec2 / gamma ** 2))
    assert found["log_prod_fro_over_margin"] == pytest.approx(math.log(fro1 * fro2 / gamma ** 2))
    assert found["log_spec_orig"] == pytest.approx(math.log(spec1 * spec2 / gamma ** 2 * (fro1 / spec1 + fro2 / spec2)))
    # Path-norm: every parameter squared, input all ones: h = W1^2 1 + b1^2 = (5.25, 10.25);
    # f = W2^2 h + b2^2 = (5.25, 41.01, 0.25 * 5.25 + 10.25); its sum.
    path = 5.25 + (4 * 10.25 + 0.01) + (0.25 * 5.25 + 10.25)
    assert found["path_norm"] == pytest.approx(path)
    assert found["path_norm_over_margin"] == pytest.approx(path / gamma ** 2)
    # Distance from init: W1 differs by 1 and -1, W2 by 2 (biases are not weights).
    assert found["distance_from_init"] == pytest.approx(math.sqrt(1 + 1 + 4))
    sigma = found["pacbayes_sigma"]
    assert found["pacbayes_flatness"] == pytest.approx(1 / sigma ** 2)
    assert found["pacbayes_init"] == pytest.approx(6 / (4 * sigma ** 2) + math.log(4 / sigma) + 10)


def test_fisher_rao_by_hand():
    # <w, grad_w loss> = d/dt loss(f with both weight matrices scaled by 1 + t) at t = 0
    #                  = (softmax(f) - onehot(y)) . (W2 h + W2 (relu'(pre) * W1 x)).
    x, y = data()
    total = 0.0
    for xi, yi in zip(X, Y):
        pre, h, f = hand_forward(xi)
        z = sum(math.exp(v) for v in f)
        p = [math.exp(v) / z for v in f]
        inner = [(W1[i][0] * xi[0] + W1[i][1] * xi[1]) * (1.0 if pre[i] > 0 else 0.0) for i in range(2)]
        df = [sum(W2[j][i] * (h[i] + inner[i]) for i in range(2)) for j in range(3)]
        total += sum((p[j] - (1.0 if j == yi else 0.0)) * df[j] for j in range(3)) ** 2
    assert g.fisher_rao(tiny(), x, y) == pytest.approx((2 + 1) ** 2 * total / 4, rel=1e-9)


def test_bisection_finds_where_the_deviation_reaches_the_target():
    assert g.bisect_sigma(lambda s: s, target=0.1, tolerance=0.01) == pytest.approx(0.09375)  # 1, .5, .25, .125, .09375
    found = g.bisect_sigma(lambda s: s * s, target=0.1, tolerance=1e-4, depth=30)
    assert found == pytest.approx(math.sqrt(0.1), abs=1e-3)
    assert g.bisect_sigma(lambda s: 0.0, depth=15) == pytest.approx(2 - 2 / 2 ** 15)  # never reached: the upper end


def test_pacbayes_sigma_moves_training_accuracy_by_the_target():
    torch.manual_seed(0)
    x = torch.randn(400, 2, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = tiny()
    base = g.accuracy(model, x, y)
    sigma = g.pacbayes_sigma(model, x, y, seed=0, samples=20)
    check = g.perturbed_accuracy(model, x, y, sigma, torch.Generator().manual_seed(1), samples=200)
    assert abs(check - base) == pytest.approx(0.1, abs=0.03)
    assert g.accuracy(model, x, y) == base  # the weights are restored
    mag = g.pacbayes_sigma(model, x, y, seed=0, samples=20, magnitude_eps=1e-3)
    check = g.perturbed_accuracy(model, x, y, mag, torch.Generator().manual_seed(1), samples=200, magnitude_eps=1e-3)
    assert abs(check - base) == pytest.approx(0.1, abs=0.03)


def test_kendall_tau_and_granulated_tau_by_hand():
    assert g.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # pairs: +1, +1, -1
    assert g.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)  # a tie counts 0
    assert g.kendall_tau([3, 2, 1], [1, 2, 3]) == -1 and g.kendall_tau([1], [1]) is None
    settings = [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 1}]
    measure, gap = [1, 2, 4, 3], [1, 2, 3, 4]
    # a varies within b=0 (runs 0, 1: agree, +1) and b=1 (runs 2, 3: disagree, -1): psi_a = 0.
    assert g.granulated_tau(measure, gap, settings, "a") == 0
    # b varies within a=0 (runs 0, 2: +1) and a=1 (runs 1, 3: +1): psi_b = 1.
    assert g.granulated_tau(measure, gap, settings, "b") == 1
    assert g.granulated_tau(measure, gap, [{"a": 0}] * 4, "a") is None


def test_swept_keys_are_what_differs_except_seeds_and_paths():
    configs = [{"seed": s, "optim.lr": lr, "model": "mlp", "model.widths": w, "paths.data_dir": d}
               for s, lr, w, d in ((0, 0.1, [8], "a"), (1, 0.2, [8], "b"), (0, 0.1, [16], "a"))]
    assert swept_keys(configs) == ["optim.lr", "model.widths"]


def test_measures_method_ranks_every_measure_over_a_sweep(sweep, tmp_path, capsys):
    frozen = tmp_path / "frozen"  # lr = 0: the run ends where it started, so its distance from init is exactly 0
    train_in_process(["train.epochs=null", "train.steps=30", "train.eval_every=30", "train.batch_size=64",
                      "hardware.threads=1", "model.widths=[8]", "optim.lr=0.0"], frozen)
    summary = train_in_process(["method=measures", f"ingredients=[{sweep}/*,{frozen}]", "measures.max_examples=300",
                                "measures.pacbayes_samples=3", "hardware.threads=1"], tmp_path / "measures")
    assert summary["runs_measured"] == 5 and summary["swept"] == "optim.lr,model.widths"
    rows = summary["rows"]
    assert len(rows) == len(g.MEASURES) and {r["measure"] for r in rows} == set(g.MEASURES)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    taus = [r["kendall_tau"] for r in rows]
    assert taus == sorted(taus, reverse=True) and all(-1 <= t <= 1 for t in taus)
    assert summary["best_measure"] == rows[0]["measure"]
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs[str(frozen)]["distance_from_init"] == 0.0
    assert runs[str(sweep / "0")]["distance_from_init"] > 0
    for run in summary["runs"]:
        assert run["gap"] == pytest.approx(run["train_accuracy"] - run["test_accuracy"])
    # The gap's own rank correlation is recomputable from the per-run values.
    params = [r["parameters"] for r in summary["runs"]]
    gaps = [r["gap"] for r in summary["runs"]]
    by_name = {r["measure"]: r for r in rows}
    assert by_name["parameters"]["kendall_tau"] == pytest.approx(g.kendall_tau(params, gaps))
    assert by_name["parameters"]["granulated_optim.lr"] == 0  # lr never changes the parameter count: all pairs tie
    assert runner(["table", str(tmp_path / "measures"), "--rows", "rank,measure", "--metric", "kendall_tau"]) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "pool" not in captured.err  # one measure per row: nothing is pooled, so no note about it
    lines = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split("|")[1].split(",")[1].strip() for line in lines] == [r["measure"] for r in rows]


def test_granulated_tau_of_a_seed_only_sweep_says_it_needs_a_swept_key(tmp_path, capsys):
    short = ["train.epochs=null", "train.steps=10", "train.eval_every=10", "model.widths=[8]", "hardware.threads=1"]
    for seed in (0, 1):
        train_in_process([*short, f"seed={seed}"], tmp_path / "seeds" / str(seed))
    summary = train_in_process(["method=measures", f"ingredients={tmp_path / 'seeds'}", "measures.max_examples=100",
                                "measures.pacbayes_samples=2", "hardware.threads=1"], tmp_path / "measures")
    assert summary["swept"] == "(none)" and all(row["granulated_tau"] is None for row in summary["rows"])
    capsys.readouterr()
    assert runner(["table", str(tmp_path / "measures"), "--rows", "rank,measure", "--metric", "granulated_tau"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runner table: error: no run reports the metric 'granulated_tau': it "
                                               "needs a swept key other than seed")


def test_measures_needs_two_finished_runs(sweep, tmp_path, capsys):
    code = runner(["train", "method=measures", f"ingredients=[{sweep / '0'}]", f"hydra.run.dir={tmp_path / 'one'}"])
    assert code == 2 and "at least 2 runs" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()


def test_worst_case_perturbation_stays_in_its_box_and_hurts_more_than_noise():
    torch.manual_seed(0)
    x = torch.randn(400, 2, dtype=torch.float64)
    model = tiny()
    with torch.no_grad():
        y = model(x).argmax(1)  # the network's own labels: every perturbation can only lower its accuracy
    base = g.accuracy(model, x, y)
    assert base == 1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A zero-radius box (alpha = 0, eps = 0) cannot move the weights at all.
    assert g.worst_case_accuracy(model, x, y, 0.0, torch.Generator().manual_seed(0), magnitude_eps=0.0) == base
    adversarial = g.worst_case_accuracy(model, x, y, 0.3, torch.Generator().manual_seed(0))
    random = g.perturbed_accuracy(model, x, y, 0.3, torch.Generator().manual_seed(0), samples=20, magnitude_eps=1e-3)
    assert adversarial < random <= base + 0.05  # the ascent finds a worse point than Gaussian noise of that scale
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored
    alpha = g.sharpness_alpha(model, x, y, seed=0)
    deviation = base - g.worst_case_accuracy(model, x, y, alpha, torch.Generator().manual_seed(10348628753))
    assert deviation == pytest.approx(0.1, abs=0.04)
    assert 0 < alpha < g.pacbayes_sigma(model, x, y, seed=0, samples=10, magnitude_eps=1e-3)
