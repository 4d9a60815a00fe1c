"""Train the LSTM forecaster on synthetic seasonal series (and on a CSV column if you give one), print
its test-split metrics beside the naive, seasonal naive and context-mean baselines, and write fan
charts (held-out windows with their truth, and sampled paths beyond the end of the data).

    python python/forecast_seasonal.py                     # writes runs/examples/forecast_seasonal/
    python python/forecast_seasonal.py --head quantile
    python python/forecast_seasonal.py --csv sales.csv --column units --horizon 7
    python python/forecast_seasonal.py --quick             # a smoke run in seconds
"""
import argparse
import time
from pathlib import Path

import torch

from genkernels.data import get_dataset
from genkernels.figures import plot_loss_curve, save_figures
from genkernels.models.forecast import LSTMForecaster
from genkernels.train import TrainConfig, Trainer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=LSTMForecaster.train_defaults["steps"])
    parser.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    parser.add_argument("--head", choices=("gaussian", "quantile"), default="gaussian")
    parser.add_argument("--num-series", type=int, default=32, help="synthetic series")
    parser.add_argument("--csv", help="also train on one column of this CSV file (rows in time order)")
    parser.add_argument("--column", help="the CSV column: a header name or a 0-based index")
    parser.add_argument("--context", type=int, help="CSV only: past values read (default: from the season)")
    parser.add_argument("--horizon", type=int, help="CSV only: values forecast (default: one season)")
    parser.add_argument("--windows", type=int, default=4, help="held-out windows in the fan chart")
    parser.add_argument("--paths", type=int, default=200, help="sampled paths beyond the data")
    parser.add_argument("--device", default="auto")
    # its own folder: `genkernels train forecast` writes runs/forecast, and two runs must not mix
    parser.add_argument("--out", default="runs/examples/forecast_seasonal")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run (tiny settings)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.hidden, args.num_series, args.paths, args.windows = 4, 8, 4, 10, 2
    return args


def metric_table(metrics: dict, title: str, season_length: int) -> str:
    rows = [("LSTM forecaster", ""), ("naive (last value)", "naive_"),
            (f"seasonal naive (m={season_length})", "seasonal_naive_"), ("mean of context", "mean_")]
    lines = [f"{title:34s} {'MAE':>8s} {'RMSE':>8s} {'sMAPE %':>8s} {'MASE':>7s}"]
    for name, prefix in rows:
        lines.append(f"{name:34s} {metrics[prefix + 'mae']:8.3f} {metrics[prefix + 'rmse']:8.3f} "
                     f"{metrics[prefix + 'smape']:8.2f} {metrics[prefix + 'mase']:7.3f}")
    lines.append(f"CRPS {metrics['crps']:.3f}, 80 % interval coverage {metrics['coverage_80']:.3f}, "
                 f"MASE / seasonal naive MASE {metrics['mase_vs_seasonal_naive']:.3f}")
    return "\n".join(lines)


def run(name: str, data: str, data_options: dict, args, out: Path) -> None:
    train, val, test = (get_dataset(data, split, **data_options) for split in ("train", "val", "test"))
    torch.manual_seed(0)
    model = LSTMForecaster(LSTMForecaster.config_for_data(train, {"hidden_size": args.hidden, "head": args.head}))
    c = model.config
    print(f"{name}: {train.num_series} series, context {c.context}, horizon {c.horizon}, season {c.season_length}; "
          f"{len(train)} train / {len(val)} val / {len(test)} test windows")
    config = TrainConfig(**{**LSTMForecaster.train_defaults, "steps": args.steps, "progress": False,
                            "device": args.device, "out_dir": str(out)})
    start = time.perf_counter()
    trainer = Trainer(model, train, val, config)
    history = trainer.fit()
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")
    with trainer.best_weights(), torch.no_grad():
        model.eval()
        metrics = model.evaluate(test)
        print(metric_table(metrics, f"test split ({len(test)} windows)", c.season_length))
        figures = {"fan_test": model.fan_chart(test, windows=args.windows)}
        samples = model.sample(args.paths)
        figures["forecast"] = model.figures(samples)["samples"]
        files = model.sample_files(samples)
    paths = save_figures(figures, out)
    for file_name, content in files.items():
        (out / file_name).write_bytes(content)
        paths.append(str(out / file_name))
    paths.append(plot_loss_curve(history, out / "loss.png", units=model.metric_units))
    print("outputs:", *paths, sep="\n  ")


def main():
    args = parse_args()
    out = Path(args.out)
    run("synthetic seasonal series", "seasonal", {"num_series": args.num_series}, args, out / "seasonal")
    if args.csv:
        options = {"column": args.column} if args.column is not None else {}
        options.update({k: getattr(args, k) for k in ("context", "horizon") if getattr(args, k) is not None})
        run(f"{args.csv} column {args.column}", args.csv, options, args, out / "csv")


if __name__ == "__main__":
    main()
