"""LSTMForecaster: config checks, training lowers the held-out loss, forecasts / samples / evaluate,
figures and files, and the CLI round trip (train, eval, sample) on synthetic and CSV data."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from genkernels.cli import main
from genkernels.data.timeseries import SeasonalSeriesDataset
from genkernels.models import REGISTRY, get_model_class
from genkernels.models.forecast import ForecastConfig, LSTMForecaster, quantile_function

TINY_DATA = {"num_series": 4, "length": 360, "context": 48, "horizon": 12, "val_length": 48, "test_length": 48}
TINY_MODEL = {"hidden_size": 16}


@pytest.fixture(scope="module")
def data():
    return {s: SeasonalSeriesDataset(s, **TINY_DATA) for s in ("train", "val", "test")}


def make_model(data, **overrides):
    torch.manual_seed(0)
    return LSTMForecaster(LSTMForecaster.config_for_data(data["train"], {**TINY_MODEL, **overrides}))


def batch_of(dataset, count=None):
    return default_collate([dataset[i] for i in range(count or len(dataset))])


def train(model, dataset, steps=60, lr=1e-2):
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        indices = torch.randint(len(dataset), (32,), generator=generator).tolist()
        loss = model.loss(default_collate([dataset[i] for i in indices]))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_registry_and_config_from_data(data):
    assert REGISTRY["forecast"] == "genkernels.models.forecast:LSTMForecaster"
    assert get_model_class("forecast") is LSTMForecaster
    config = LSTMForecaster.config_for_data(data["train"])
    assert (config.context, config.horizon, config.season_length, config.seasons) == (48, 12, 24, (24, 168))
    np.testing.assert_allclose(config.origin_values, data["train"].series[0][-48:])
    assert config.origin_start == 360 - 48
    shorter = LSTMForecaster.config_for_data(data["train"], {"context": 24})  # reads the end of longer windows
    assert shorter.context == 24 and shorter.origin_start == 360 - 24
    # the JSON round trip of a checkpoint (tuples come back as lists)
    restored = LSTMForecaster.from_config_dict(json.loads(json.dumps(LSTMForecaster(config).config_dict())))
    assert restored.config == config


@pytest.mark.parametrize("overrides, error, match", [
    ({"head": "student"}, ValueError, "head must be one of"),
    ({"quantiles": (0.5, 0.1)}, ValueError, "strictly increasing"),
    ({"quantiles": (0.0, 0.5)}, ValueError, "strictly increasing"),
    ({"dropout": 1.0}, ValueError, "dropout must be < 1"),
    ({"context": 0}, ValueError, "context must be >= 1"),
    ({"hidden_size": 8.0}, TypeError, "hidden_size must be an int"),
    ({"seasons": (24, 1)}, ValueError, r"seasons\[1\] must be >= 2"),
    ({"origin_values": (1.0, 2.0)}, ValueError, "origin_values must hold context=96"),
    ({"origin_scale": 0.0}, ValueError, "origin_scale must be > 0"),
])
def test_bad_configs(overrides, error, match):
    with pytest.raises(error, match=match):
        ForecastConfig(**overrides)


@pytest.mark.parametrize("head", ["gaussian", "quantile"])
def test_training_lowers_the_held_out_loss(data, head):
    model = make_model(data, head=head)
    val = batch_of(data["val"])
    with torch.no_grad():
        before = model.loss(val)["loss"].item()
    train(model, data["train"])
    with torch.no_grad():
        after = model.loss(val)["loss"].item()
    assert after < before - 0.05, (before, after)


def test_forecast_summaries(data):
    gaussian, quantile = make_model(data), make_model(data, head="quantile", quantiles=(0.05, 0.1, 0.5, 0.9, 0.95))
    batch = batch_of(data["test"], 5)
    context, start = batch["values"][:, :48], batch["start"]
    g = gaussian.forecast(context, start, batch["loc"], batch["scale"])
    assert set(g) == {"mean", "median", "std", "lower", "upper"} and g["mean"].shape == (5, 12)
    assert (g["std"] > 0).all()
    torch.testing.assert_close(g["upper"] - g["mean"], 1.2815515655446004 * g["std"])
    q = quantile.forecast(context, start)  # loc / scale from the contexts themselves
    assert q["quantiles"].shape == (5, 12, 5)
    assert (q["quantiles"].diff(dim=-1) > 0).all()  # never crossing
    torch.testing.assert_close(q["median"], q["quantiles"][..., 2])
    torch.testing.assert_close(q["lower"], q["quantiles"][..., 1])
    one = gaussian.forecast(context[0].tolist(), int(start[0]), batch["loc"][0], batch["scale"][0])
    torch.testing.assert_close(one["mean"], g["mean"][:1])
    with pytest.raises(ValueError, match=r"context must have shape \(context,\) or \(B, context\) with context = 48"):
        gaussian.forecast(torch.zeros(3, 47))
    with pytest.raises(TypeError, match="context must be a sequence"):
        gaussian.forecast("abc")


def test_quantile_function_interpolates_and_extends():
    levels = torch.tensor([0.1, 0.5, 0.9])
    quantiles = torch.tensor([[0.0, 1.0, 3.0]])
    u = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9, 0.0, 1.0]])
    expected = torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0, -0.25, 3.5]])
    torch.testing.assert_close(quantile_function(quantiles.expand(1, 7, 3)[0], levels, u[0]), expected[0])


@pytest.mark.parametrize("head", ["gaussian", "quantile"])
def test_samples_follow_the_forecast(data, head):
    model = make_model(data, head=head)
    torch.manual_seed(1)
    paths = model.sample(4000)
    assert paths.shape == (4000, 12) and paths.dtype == torch.float32
    c = model.config
    summary = model.forecast(c.origin_values, c.origin_start, c.origin_loc, c.origin_scale)
    inside = ((paths >= summary["lower"]) & (paths <= summary["upper"])).float().mean()
    assert abs(inside.item() - 0.8) < 0.03
    torch.testing.assert_close(paths.median(dim=0).values, summary["median"][0], atol=0.1 * c.origin_scale, rtol=0)
    torch.manual_seed(1)
    assert torch.equal(model.sample(4000), paths)
    own = model.sample(3, context=data["test"][0]["values"][:48], start=5)
    assert own.shape == (3, 12)
    bare = LSTMForecaster(ForecastConfig(context=48, horizon=12, **TINY_MODEL))
    with pytest.raises(ValueError, match="holds no origin"):
        bare.sample(2)
    with pytest.raises(ValueError, match="one context"):
        model.sample(2, context=torch.zeros(2, 48))


def test_evaluate_reports_metrics_beside_the_baselines(data):
    model = make_model(data)
    metrics = model.evaluate(data["test"])
    for prefix in ("", "naive_", "seasonal_naive_", "mean_"):
        assert {f"{prefix}mae", f"{prefix}rmse", f"{prefix}smape", f"{prefix}mase"} <= set(metrics)
    assert {"crps", "coverage_80", "mase_vs_seasonal_naive"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    # the seasonal naive baseline by hand: the value 24 steps before each target
    batch = batch_of(data["test"])
    values, scale = batch["values"].double(), batch["mase_scale"].double()
    seasonal = values[:, 48 - 24:48 - 24 + 12]
    target = values[:, 48:]
    assert metrics["seasonal_naive_mae"] == pytest.approx((seasonal - target).abs().mean().item(), rel=1e-5)
    assert metrics["seasonal_naive_mase"] == pytest.approx(((seasonal - target).abs().mean(1) / scale).mean().item(),
                                                           rel=1e-5)
    assert metrics["naive_mae"] == pytest.approx((values[:, 47:48] - target).abs().mean().item(), rel=1e-5)
    assert metrics["mean_mae"] == pytest.approx((values[:, :48].mean(1, keepdim=True) - target).abs().mean().item(),
                                                rel=1e-5)
    assert model.evaluate(data["test"], max_items=3)["mae"] != metrics["mae"]
    quantile = make_model(data, head="quantile")
    assert {"crps", "coverage_80"} <= set(quantile.evaluate(data["val"], max_items=8))
    base = LSTMForecaster.baselines(torch.arange(6.0).unsqueeze(0), horizon=4, season_length=3)
    assert base["seasonal_naive"].tolist() == [[3.0, 4.0, 5.0, 3.0]]
    assert base["naive"].tolist() == [[5.0] * 4] and base["mean"].tolist() == [[2.5] * 4]


def test_data_of_other_windows_is_refused(data):
    model = make_model(data)
    other = SeasonalSeriesDataset("test", **{**TINY_DATA, "horizon": 6})
    with pytest.raises(ValueError, match="needs horizon 12"):
        model.evaluate(other)
    with pytest.raises(ValueError, match="trains on series data"):
        LSTMForecaster.check_data(torch.utils.data.TensorDataset(torch.zeros(2)))
    with pytest.raises(TypeError, match="must be a dict"):
        model.loss(torch.zeros(2, 60))
    with pytest.raises(ValueError, match=r"T >= context \+ horizon = 60"):
        model.loss({"values": torch.zeros(2, 30)})


def test_figures_and_forecast_csv(data):
    model = make_model(data, head="quantile")
    samples = model.sample(20)
    figures = model.figures(samples)
    assert set(figures) == {"samples"} and hasattr(figures["samples"], "savefig")
    assert model.figures(torch.zeros(2, 5)) == {}
    rows = list(csv.reader(io.StringIO(model.sample_files(samples)["forecast.csv"].decode())))
    assert rows[0][:5] == ["time", "mean", "median", "p10", "p90"] and len(rows[0]) == 5 + 20
    assert len(rows) == 1 + 12 and int(rows[1][0]) == 360
    assert float(rows[1][5]) == pytest.approx(samples[0, 0].item(), rel=1e-5)
    assert hasattr(model.fan_chart(data["test"], windows=3), "savefig")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


QUICK = ["--steps", "2", "--batch-size", "8", "--eval-every", "0", "--log-every", "1", "--num-samples", "16",
         "--checkpoint-every", "0", "--no-progress", "--device", "cpu", "--set", "hidden_size=8"]


def test_cli_train_eval_sample(capsys, tmp_path):
    out_dir = tmp_path / "forecast"
    code, _, err = run(capsys, "train", "forecast", "--out", str(out_dir), *QUICK)
    assert code == 0, err
    assert {"samples.png", "forecast.csv", "metrics.json", "checkpoint"} <= {p.name for p in out_dir.iterdir()}
    code, out, err = run(capsys, "eval", str(out_dir), "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert {"mase", "seasonal_naive_mase", "crps", "coverage_80"} <= set(result["metrics"])
    assert "loss" in result["losses"]
    code, _, err = run(capsys, "sample", str(out_dir), "-n", "5", "--out", str(tmp_path / "s"), "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "s" / "samples.png").is_file()
    assert len((tmp_path / "s" / "forecast.csv").read_text().splitlines()) == 1 + 24


def test_cli_trains_on_a_csv_column(capsys, tmp_path):
    t = np.arange(400)
    values = 20 + 5 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.5, 400)
    path = tmp_path / "sales.csv"
    path.write_text("day,units\n" + "".join(f"{i},{v:.3f}\n" for i, v in enumerate(values)))
    out_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "forecast", "--data", f"{path}:units", "--out", str(out_dir), *QUICK)
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(out_dir), "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["data"] == f"{path}:units"
    code, _, err = run(capsys, "train", "forecast", "--data", f"{path}:volume", "--out", str(out_dir), *QUICK)
    assert code == 1 and "no column 'volume'" in err and "'units'" in err
