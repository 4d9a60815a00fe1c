"""A small probabilistic forecaster: an LSTM encoder over the recent past, a head that predicts the
whole horizon at once (the "multi-horizon" direct strategy of MQ-RNN, Wen et al. 2017).

    window   x_1 .. x_C (context) | y_1 .. y_H (horizon), raw values of one series
    scale    z = (x - loc) / scale with the series' training mean / std (from the dataset), then
             centred on the mean of the last season of the context (level = mean z_{C-m+1..C}),
             so a trend or a level shift moves the input, not the network's operating point
    input    (B, C, 1 + 2S): z - level and, for each seasonal period p (config.seasons), sin and
             cos of 2 pi t / p at each step's time index t (the position within the day, week ...)
    encoder  genkernels.nn.LSTM(1 + 2S, hidden_size, num_layers) -> last hidden state (B, hidden)
    head     MLP(hidden) -> (B, H, k) per horizon step, plus (linear_skip) a linear map of the
             centred context to the H locations: the autoregressive "highway" of LSTNet (Lai et al.
             2018), initialised to the seasonal naive forecast, so training starts at that baseline
             and the LSTM learns the corrections
    output   "gaussian": mean and std = softplus(.) + 1e-3 per step (k = 2), loss = Gaussian NLL
             "quantile": K quantiles per step (k = K), kept ordered as q_1 + cumsum(softplus(.)),
             loss = pinball loss averaged over the levels
    back     value = (output + level) * scale + loc (stds scale by `scale`)

Units: "loss" is per horizon value in the scaled units (nats for the Gaussian NLL). `evaluate`
reports raw-unit metrics on held-out windows (MAE, RMSE, sMAPE, MASE, CRPS, 80 % interval
coverage) beside three baselines computed from the same contexts: naive (the last value),
seasonal naive (the value one season earlier) and the mean of the context.

Sampling. `forecast(context)` gives the distribution's summaries; `sample(n)` draws n future paths
for the origin stored in the config (`config_for_data` takes the last `context` values of the
data's first series: a forecast beyond the end of the data) or for a `context` you pass. The head
gives per-step marginals, so a path draws every step independently (Gaussian: mean + std eps;
quantile: the quantile function, linear between levels and extended linearly past the outer ones,
at uniform levels). `figures` draws the fan chart of the samples; `fan_chart(dataset)` the same
for held-out windows with their truth; `sample_files` writes forecast.csv.
"""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import check_bool, check_choice, check_int, check_real, evaluation_count
from genkernels.models.base import GenerativeModel
from genkernels.nn.lstm import LSTM

HEADS = ("gaussian", "quantile")
_Z80 = 1.2815515655446004  # the 0.9 quantile of N(0, 1): mean +- _Z80 std is the central 80 % interval


@dataclasses.dataclass
class ForecastConfig:
    """context        past values the encoder reads (C)
    horizon        future values predicted at once (H)
    hidden_size    LSTM width
    num_layers     stacked LSTM layers
    head           "gaussian" (mean and std per step) or "quantile" (`quantiles` per step)
    quantiles      levels of the quantile head, strictly increasing in (0, 1)
    dropout        on the encoder output (and between LSTM layers) during training
    season_length  m: the seasonal naive lag and the span of the level the inputs are centred on
    seasons        periods of the sin / cos time covariates (may be empty)
    linear_skip    add a linear map of the centred context to the predicted locations
    origin_values  the `context` raw values `sample` forecasts from when given none (may be empty)
    origin_start   the time index of origin_values[0] (for the covariates)
    origin_loc, origin_scale  the scaling statistics of the origin's series
    """

    context: int = 96
    horizon: int = 24
    hidden_size: int = 64
    num_layers: int = 1
    head: str = "gaussian"
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    dropout: float = 0.0
    season_length: int = 24
    seasons: tuple[int, ...] = (24, 168)
    linear_skip: bool = True
    origin_values: tuple[float, ...] = ()
    origin_start: int = 0
    origin_loc: float = 0.0
    origin_scale: float = 1.0

    def __post_init__(self):
        for name, minimum in (("context", 1), ("horizon", 1), ("hidden_size", 1), ("num_layers", 1),
                              ("season_length", 1), ("origin_start", 0)):
            setattr(self, name, check_int(f"ForecastConfig.{name}", getattr(self, name), minimum))
        self.head = check_choice("ForecastConfig.head", self.head, HEADS)
        self.dropout = check_real("ForecastConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"ForecastConfig.dropout must be < 1, got {self.dropout}")
        self.linear_skip = check_bool("ForecastConfig.linear_skip", self.linear_skip)
        if not isinstance(self.seasons, (tuple, list)):
            raise TypeError(f"ForecastConfig.seasons must be a tuple of ints, got {self.seasons!r}")
        self.seasons = tuple(check_int(f"ForecastConfig.seasons[{i}]", p, 2) for i, p in enumerate(self.seasons))
        if not isinstance(self.quantiles, (tuple, list)) or not self.quantiles:
            raise TypeError(f"ForecastConfig.quantiles must be a non-empty tuple of levels, got {self.quantiles!r}")
        self.quantiles = tuple(check_real(f"ForecastConfig.quantiles[{i}]", q) for i, q in enumerate(self.quantiles))
        if any(not 0.0 < q < 1.0 for q in self.quantiles) or \
                any(b <= a for a, b in zip(self.quantiles, self.quantiles[1:])):
            raise ValueError(f"ForecastConfig.quantiles must be strictly increasing levels in (0, 1), "
                             f"got {self.quantiles}")
        if not isinstance(self.origin_values, (tuple, list)):
            raise TypeError(f"ForecastConfig.origin_values must be a tuple of floats, "
                            f"got {type(self.origin_values).__name__}")
        self.origin_values = tuple(check_real(f"ForecastConfig.origin_values[{i}]", v)
                                   for i, v in enumerate(self.origin_values))
        if self.origin_values and len(self.origin_values) != self.context:
            raise ValueError(f"ForecastConfig.origin_values must hold context={self.context} values (or none), "
                             f"got {len(self.origin_values)}")
        self.origin_loc = check_real("ForecastConfig.origin_loc", self.origin_loc)
        self.origin_scale = check_real("ForecastConfig.origin_scale", self.origin_scale)
        if self.origin_scale <= 0:
            raise ValueError(f"ForecastConfig.origin_scale must be > 0, got {self.origin_scale}")

    @property
    def outputs_per_step(self) -> int:
        return 2 if self.head == "gaussian" else len(self.quantiles)


def quantile_function(quantiles: torch.Tensor, levels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Values at levels u (...,) of the piecewise-linear quantile function through the points
    (levels[k], quantiles[..., k]), extended linearly past the outer levels with the end segments'
    slopes (a single level: that quantile). quantiles (..., K) ordered, levels (K,) increasing."""
    K = levels.numel()
    if K == 1:
        return quantiles[..., 0].expand_as(u).clone()
    # segment k joins levels k and k+1; u below levels[1] uses segment 0, above levels[-2] segment K-2
    k = torch.searchsorted(levels.contiguous(), u.contiguous().reshape(-1)).reshape(u.shape)
    k = (k - 1).clamp(0, K - 2)
    q0, q1 = quantiles.gather(-1, k.unsqueeze(-1)).squeeze(-1), quantiles.gather(-1, (k + 1).unsqueeze(-1)).squeeze(-1)
    l0, l1 = levels[k], levels[k + 1]
    return q0 + (q1 - q0) * (u - l0) / (l1 - l0)


class LSTMForecaster(GenerativeModel):
    """LSTM encoder + direct multi-horizon Gaussian or quantile head (see the module docstring)."""

    name = "forecast"
    config_class = ForecastConfig
    default_data = "seasonal"
    data_kinds = ("series",)
    # `genkernels train forecast`: about 2 minutes on 2 CPU cores (see the README)
    train_defaults = {"steps": 1500, "batch_size": 64, "lr": 3e-3, "warmup_steps": 50, "weight_decay": 0.01,
                      "min_lr_ratio": 0.05, "eval_every": 500, "eval_max_items": None, "ema_decay": 0.995,
                      "num_samples": 200}
    metric_units = {"loss": "per value (scaled)", "mae": "data units", "rmse": "data units", "smape": "%",
                    "crps": "data units"}

    def __init__(self, config: ForecastConfig | None = None):
        super().__init__(config if config is not None else ForecastConfig())
        c = self.config
        features = 1 + 2 * len(c.seasons)
        self.encoder = LSTM(features, c.hidden_size, c.num_layers, batch_first=True,
                            dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Sequential(nn.Linear(c.hidden_size, c.hidden_size), nn.GELU(),
                                  nn.Linear(c.hidden_size, c.horizon * c.outputs_per_step))
        self.skip = nn.Linear(c.context, c.horizon) if c.linear_skip else None
        if self.skip is not None:
            self._init_seasonal_naive(self.skip)
        self.register_buffer("levels", torch.tensor(c.quantiles, dtype=torch.float32), persistent=False)
        if c.head == "quantile":
            self.metric_units = {**type(self).metric_units, "loss": "pinball per value (scaled)"}
        else:
            self.metric_units = {**type(self).metric_units, "loss": "nats per value (scaled)"}

    def _init_seasonal_naive(self, skip: nn.Linear) -> None:
        """Start the skip at the seasonal naive forecast: step h copies the centred context value one
        season (m) earlier, C - m + h mod m (the last value when m > C), so training begins at the
        baseline and the LSTM learns the corrections."""
        c = self.config
        m = c.season_length if c.season_length <= c.context else 1
        with torch.no_grad():
            skip.weight.zero_(), skip.bias.zero_()
            steps = torch.arange(c.horizon)
            skip.weight[steps, c.context - m + steps % m] = 1.0

    # -- the network ----------------------------------------------------------------------------
    def _covariates(self, start: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length, 2S) sin / cos of 2 pi t / p for each season p, t = start + 0..length-1."""
        t = start.to(torch.float64).unsqueeze(1) + torch.arange(length, device=start.device, dtype=torch.float64)
        angles = [2.0 * math.pi * torch.remainder(t, p) / p for p in self.config.seasons]
        parts = [f(a) for a in angles for f in (torch.sin, torch.cos)]
        if not parts:
            return t.new_zeros(t.shape[0], length, 0, dtype=torch.float32)
        return torch.stack(parts, dim=-1).float()

    def _normalise(self, context: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        """Centred scaled context (B, C) and its level (B, 1)."""
        z = (context - loc.unsqueeze(1)) / scale.unsqueeze(1)
        span = min(self.config.season_length, self.config.context)
        level = z[:, -span:].mean(dim=1, keepdim=True)
        return z - level, level

    def network(self, centred: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Head outputs (B, H, k) in centred scaled units from the centred context (B, C)."""
        c = self.config
        inputs = torch.cat([centred.unsqueeze(-1), self._covariates(start, c.context)], dim=-1)  # (B, C, 1 + 2S)
        hidden, _ = self.encoder(inputs)                                   # (B, C, hidden)
        out = self.head(self.dropout(hidden[:, -1]))                       # (B, H * k)
        out = out.reshape(-1, c.horizon, c.outputs_per_step)              # (B, H, k)
        if c.head == "gaussian":
            mean, std = out[..., 0], F.softplus(out[..., 1]) + 1e-3
            out = torch.stack([mean, std], dim=-1)
        else:
            increments = F.softplus(out[..., 1:])
            out = torch.cat([out[..., :1], out[..., :1] + increments.cumsum(dim=-1)], dim=-1)
        if self.skip is not None:
            location = self.skip(centred).unsqueeze(-1)                    # (B, H, 1)
            if c.head == "gaussian":
                out = torch.cat([out[..., :1] + location, out[..., 1:]], dim=-1)
            else:
                out = out + location
        return out

    def _split(self, batch) -> tuple[torch.Tensor, ...]:
        if not isinstance(batch, dict) or "values" not in batch:
            raise TypeError("a forecast batch must be a dict with 'values' (B, context + horizon), 'start', "
                            "'loc' and 'scale' (items of genkernels.data.timeseries)")
        values = batch["values"].float()
        c = self.config
        if values.ndim != 2 or values.shape[1] < c.context + c.horizon:
            raise ValueError(f"batch['values'] must have shape (B, T) with T >= context + horizon = "
                             f"{c.context + c.horizon}, got {tuple(values.shape)}")
        skip = values.shape[1] - c.context - c.horizon  # windows with a longer context: read its end
        return (values[:, skip:skip + c.context], values[:, skip + c.context:], batch["start"] + skip,
                batch["loc"].float(), batch["scale"].float())

    def loss(self, batch) -> dict[str, torch.Tensor]:
        context, target, start, loc, scale = self._split(batch)
        centred, level = self._normalise(context, loc, scale)
        out = self.network(centred, start)                                 # (B, H, k)
        y = (target - loc.unsqueeze(1)) / scale.unsqueeze(1) - level       # (B, H) centred scaled
        if self.config.head == "gaussian":
            mean, std = out[..., 0], out[..., 1]
            nll = 0.5 * ((y - mean) / std).square() + std.log() + 0.5 * math.log(2.0 * math.pi)
            return {"loss": nll.mean()}
        error = y.unsqueeze(-1) - out                                      # (B, H, K)
        pinball = torch.maximum(self.levels * error, (self.levels - 1.0) * error)
        return {"loss": pinball.mean()}

    # -- forecasts --------------------------------------------------------------------------------
    def _context_tensor(self, context) -> torch.Tensor:
        device = self.levels.device
        try:
            context = torch.as_tensor(context, dtype=torch.float32, device=device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"context must be a sequence or tensor of numbers, got {type(context).__name__}") from error
        if context.ndim == 1:
            context = context.unsqueeze(0)
        if context.ndim != 2 or context.shape[1] != self.config.context:
            raise ValueError(f"context must have shape (context,) or (B, context) with context = "
                             f"{self.config.context}, got {tuple(context.shape)}")
        return context

    @torch.no_grad()
    def forecast(self, context, start=None, loc=None, scale=None) -> dict[str, torch.Tensor]:
        """The forecast distribution of the `horizon` values after `context`, in raw units.

        context (C,) or (B, C) raw values; start: time index of the first context value (int or (B,);
        default 0, only the covariates' phase depends on it); loc / scale: the series' scaling
        statistics (default: the mean and std of each context). Returns a dict of (B, H) float32
        tensors: "mean", "median", "lower", "upper" (the central 80 % interval) and "std" (Gaussian)
        or "quantiles" (B, H, K) at config.quantiles (quantile head; its "mean" is the average of the
        quantiles, and the median and interval read the quantile function at 0.5, 0.1 and 0.9).
        """
        context = self._context_tensor(context)
        B, device = context.shape[0], context.device
        def per_row(value, dtype):  # a number or one per context -> (B,)
            return torch.as_tensor(value, dtype=dtype, device=device).reshape(-1).expand(B)

        start = per_row(0 if start is None else start, torch.int64)
        loc = context.mean(dim=1) if loc is None else per_row(loc, torch.float32)
        if scale is None:
            scale = context.std(dim=1, unbiased=False).clamp_min(1e-6 * context.abs().mean(dim=1).clamp_min(1.0))
        else:
            scale = per_row(scale, torch.float32)
        centred, level = self._normalise(context, loc, scale)
        out = self.network(centred, start)                                 # (B, H, k) centred scaled units
        level, loc, scale = level.unsqueeze(-1), loc.view(B, 1, 1), scale.view(B, 1, 1)  # (B, 1, 1) each
        if self.config.head == "gaussian":
            mean = ((out[..., :1] + level) * scale + loc)[..., 0]
            std = (out[..., 1:] * scale)[..., 0]
            return {"mean": mean, "median": mean, "std": std, "lower": mean - _Z80 * std, "upper": mean + _Z80 * std}
        quantiles = (out + level) * scale + loc                            # (B, H, K)
        at = {p: quantile_function(quantiles, self.levels, torch.full(quantiles.shape[:2], p, device=device))
              for p in (0.1, 0.5, 0.9)}
        return {"quantiles": quantiles, "median": at[0.5], "mean": quantiles.mean(dim=-1),
                "lower": at[0.1], "upper": at[0.9]}

    @torch.no_grad()
    def sample(self, n: int, context=None, start: int | None = None) -> torch.Tensor:
        """n future paths (n, horizon), float32 raw values, after `context` (default: the origin the
        config holds, the end of the training data's first series); start as in `forecast` (default
        config.origin_start when the origin is used)."""
        n = check_int("n", n, 1)
        c = self.config
        if context is None:
            if not c.origin_values:
                raise ValueError("this forecaster holds no origin (config.origin_values is empty): pass context=")
            context, start = c.origin_values, c.origin_start if start is None else start
            summary = self.forecast(context, start, c.origin_loc, c.origin_scale)
        else:
            summary = self.forecast(context, start)
            if summary["median"].shape[0] != 1:
                raise ValueError("sample takes one context (context,), not a batch; use forecast for batches")
        device = summary["median"].device
        if c.head == "gaussian":
            return summary["mean"] + summary["std"] * torch.randn(n, c.horizon, device=device)
        u = torch.rand(n, c.horizon, device=device)
        quantiles = summary["quantiles"].expand(n, -1, -1)
        return quantile_function(quantiles, self.levels, u)

    # -- evaluation ------------------------------------------------------------------------------
    @staticmethod
    def baselines(context: torch.Tensor, horizon: int, season_length: int) -> dict[str, torch.Tensor]:
        """Point forecasts (B, H) from the contexts (B, C): "naive" (the last value), "seasonal_naive"
        (the value season_length steps before each target; the naive one when the context is shorter
        than a season) and "mean" (the mean of the context)."""
        B, C = context.shape
        naive = context[:, -1:].expand(B, horizon)
        m = season_length if season_length <= C else 1
        steps = torch.arange(horizon, device=context.device)
        seasonal = context[:, C - m + steps % m]
        mean = context.mean(dim=1, keepdim=True).expand(B, horizon)
        return {"naive": naive, "seasonal_naive": seasonal, "mean": mean}

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 256) -> dict[str, float]:
        """Raw-unit metrics over the first max_items windows of `dataset` (all by default): mae, rmse,
        smape (%), mase, crps, coverage_80 (of the central 80 % interval), and mae / rmse / smape / mase
        of the naive, seasonal naive and context-mean baselines; mase_vs_seasonal_naive is the
        model's MASE over the seasonal naive one (below 1: better)."""
        from torch.utils.data import default_collate

        from genkernels.metrics import forecast as fm

        self.check_dataset(dataset)
        count = evaluation_count(dataset, max_items, batch_size)
        device = self.levels.device
        parts: dict[str, list[torch.Tensor]] = {}
        for begin in range(0, count, batch_size):
            batch = default_collate([dataset[i] for i in range(begin, min(begin + batch_size, count))])
            batch = {k: v.to(device) for k, v in batch.items()}
            context, target, start, loc, scale = self._split(batch)
            summary = self.forecast(context, start, loc, scale)
            found = {"target": target, "point": summary["median"], "lower": summary["lower"],
                     "upper": summary["upper"], "mase_scale": batch["mase_scale"].float()}
            found.update({f"baseline_{k}": v for k, v in
                          self.baselines(context, self.config.horizon, self.config.season_length).items()})
            found.update({k: summary[k] for k in ("mean", "std", "quantiles") if k in summary})
            for key, value in found.items():
                parts.setdefault(key, []).append(value.double().cpu())
        got = {k: torch.cat(v) for k, v in parts.items()}
        target, mase_scale = got["target"], got["mase_scale"]
        metrics: dict[str, float] = {}
        for prefix, point in (("", got["point"]), *((f"{b}_", got[f"baseline_{b}"])
                                                     for b in ("naive", "seasonal_naive", "mean"))):
            metrics[f"{prefix}mae"] = fm.mae(point, target)
            metrics[f"{prefix}rmse"] = fm.rmse(point, target)
            metrics[f"{prefix}smape"] = fm.smape(point, target)
            metrics[f"{prefix}mase"] = fm.mase(point, target, mase_scale)
        if self.config.head == "gaussian":
            metrics["crps"] = fm.crps_gaussian(got["mean"], got["std"], target)
        else:
            metrics["crps"] = fm.crps_quantiles(got["quantiles"], target, self.config.quantiles)
        metrics["coverage_80"] = fm.coverage(got["lower"], got["upper"], target)
        metrics["mase_vs_seasonal_naive"] = metrics["mase"] / metrics["seasonal_naive_mase"]
        return metrics

    # -- figures and files -----------------------------------------------------------------------
    @staticmethod
    def _fan(axis, history_t, history, future_t, median, lower, upper, truth=None, paths=None) -> None:
        axis.plot(history_t, history, color="0.25", linewidth=1.0, label="history")
        if paths is not None:
            for path in paths:
                axis.plot(future_t, path, color="tab:blue", linewidth=0.4, alpha=0.35)
        axis.fill_between(future_t, lower, upper, color="tab:blue", alpha=0.25, linewidth=0, label="80 % band")
        axis.plot(future_t, median, color="tab:blue", linewidth=1.5, label="median")
        if truth is not None:
            axis.plot(future_t, truth, color="tab:orange", linewidth=1.2, label="truth")
        axis.axvline(history_t[-1] + 0.5, color="0.6", linewidth=0.8, linestyle=":")

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": a fan chart (matplotlib Figure) of sampled paths (n, horizon) after the stored
        origin: its history, the samples' median and 10-90 % band and up to `nrow` (default 5) paths}."""
        from matplotlib.figure import Figure

        c = self.config
        if not (isinstance(samples, torch.Tensor) and samples.ndim == 2 and samples.shape[1] == c.horizon
                and len(samples) and c.origin_values):
            return {}
        paths = samples.double().cpu()
        band = torch.quantile(paths, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=0)  # (3, H)
        history_t = list(range(c.origin_start, c.origin_start + c.context))
        future_t = list(range(c.origin_start + c.context, c.origin_start + c.context + c.horizon))
        figure = Figure(figsize=(10, 3.2), layout="constrained")
        axis = figure.subplots()
        self._fan(axis, history_t, list(c.origin_values), future_t, band[1], band[0], band[2],
                  paths=paths[: nrow or 5])
        axis.set_title(f"forecast beyond the data: {len(paths)} sampled paths")
        axis.set_xlabel("time index")
        axis.legend(loc="upper left", fontsize="small")
        return {"samples": figure}

    @torch.no_grad()
    def fan_chart(self, dataset, windows: int = 4):
        """A matplotlib Figure: `windows` held-out windows of `dataset` (spread over it), each with its
        context, the truth, the forecast median and the central 80 % band."""
        from matplotlib.figure import Figure
        from torch.utils.data import default_collate

        check_int("windows", windows, 1)
        self.check_dataset(dataset)
        count = min(windows, len(dataset))
        picks = sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(count)})
        batch = default_collate([dataset[i] for i in picks])
        batch = {k: v.to(self.levels.device) for k, v in batch.items()}
        context, target, start, loc, scale = self._split(batch)
        summary = self.forecast(context, start, loc, scale)
        figure = Figure(figsize=(10, 2.4 * len(picks)), layout="constrained")
        axes = figure.subplots(len(picks), 1, squeeze=False)[:, 0]
        C, H = self.config.context, self.config.horizon
        for row, axis in enumerate(axes):
            t0 = int(start[row])
            self._fan(axis, list(range(t0, t0 + C)), context[row].cpu(), list(range(t0 + C, t0 + C + H)),
                      summary["median"][row].cpu(), summary["lower"][row].cpu(), summary["upper"][row].cpu(),
                      truth=target[row].cpu())
            axis.set_ylabel(f"series {int(batch['series'][row])}")
        axes[0].legend(loc="upper left", fontsize="small")
        axes[0].set_title("held-out windows: forecast median and 80 % band vs truth")
        axes[-1].set_xlabel("time index")
        return figure

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """{"forecast.csv": one row per horizon step: time index, mean, median, p10, p90 of the
        sampled paths, then every path (sample_0, sample_1, ...)}."""
        import csv

        c = self.config
        if not (isinstance(samples, torch.Tensor) and samples.ndim == 2 and samples.shape[1] == c.horizon):
            return {}
        paths = samples.double().cpu()
        band = torch.quantile(paths, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=0)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["time", "mean", "median", "p10", "p90", *(f"sample_{i}" for i in range(len(paths)))])
        for h in range(c.horizon):
            row = [paths[:, h].mean(), band[1, h], band[0, h], band[2, h], *paths[:, h]]
            writer.writerow([c.origin_start + c.context + h, *(f"{float(v):.6g}" for v in row)])
        return {"forecast.csv": text.getvalue().encode()}

    # -- fitting to data ---------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> ForecastConfig:
        """context, horizon, season_length and seasons from the dataset (overrides win; a context
        shorter than the data's reads the end of its windows, the horizon must be the data's), and
        the origin of `sample`: the last context of the data's first series (values, time index,
        loc, scale)."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        for key in ("context", "horizon", "season_length", "seasons"):
            values.setdefault(key, getattr(dataset, key))
        config = cls.config_class(**values)
        cls._check_windows(config, dataset, data_name)
        if not config.origin_values:
            origin = dataset.last_context(0)
            config.origin_values = tuple(origin["values"][-config.context:])
            config.origin_start = origin["start"] + len(origin["values"]) - config.context
            config.origin_loc, config.origin_scale = origin["loc"], origin["scale"]
            config.__post_init__()
        return config

    @staticmethod
    def _check_windows(config: ForecastConfig, dataset, data_name: str | None) -> None:
        """The data's windows must have this horizon and at least this context (a longer context is
        cut to its end)."""
        context, horizon = getattr(dataset, "context", None), getattr(dataset, "horizon", None)
        if horizon != config.horizon or context is None or context < config.context:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{name} has windows of context {context} + horizon {horizon}, but this forecaster "
                             f"needs horizon {config.horizon} and a context of at least {config.context} "
                             f"(pass context= / horizon= to the dataset)")

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        self.check_data(dataset, data_name)
        self._check_windows(self.config, dataset, data_name)
