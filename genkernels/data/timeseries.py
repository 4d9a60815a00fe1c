"""Time series for forecasting: seeded synthetic seasonal series, or one column of a CSV file.

An item is one window of a series: `context` past values followed by `horizon` future values, as a
dict that `default_collate` batches:

    values      float32 (context + horizon,)  raw values (the model scales them itself)
    start       int64 ()   time index of the window's first value (0 = the series' first value),
                           from which a model reads the position within each season
    series      int64 ()   which series
    loc, scale  float32 () mean and standard deviation of that series' training part
    mase_scale  float32 () in-sample MAE of the seasonal naive forecast on the training part (the
                           MASE denominator, genkernels.metrics.forecast.mase_scale)

Splits are by time, the same cut for every series of length L: the last `test_length` values are
the test stretch, the `val_length` before them the validation stretch, the rest the training part.
Training windows lie wholly inside the training part (every start, stride 1); a val or test window's
horizon lies inside its stretch (stride `horizon`: the horizons tile the stretch without overlap)
and its context is the values just before it, which may reach back into earlier parts (the past is
known when forecasting). No split ever scores a value that another split trains or tunes on, and
the scaling statistics come from the training part alone.

Besides the windows a dataset exposes what a forecasting model needs: `context`, `horizon`,
`season_length` (the seasonal naive baseline's lag), `seasons` (periods of calendar covariates),
`num_series`, `stats` and `last_context(series)`, the final `context` values of a series (the
origin of a forecast beyond the data).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels.data._splits import SPLITS, check_split

SERIES_EXTENSIONS = (".csv",)
# Cells read as missing values (case-insensitive, after stripping blanks).
MISSING_MARKERS = ("", "na", "nan", "n/a", "null", "none", "?", "-")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class _SeriesWindows(Dataset):
    """Windows over a list of series cut by time into train / val / test (see the module docstring)."""

    kind = "series"

    def _setup(self, series: list[np.ndarray], split: str, *, context: int, horizon: int, season_length: int,
               seasons: tuple[int, ...], val_length: int | None, test_length: int | None,
               stride: int | None, source: str) -> None:
        check_split(split, SPLITS)
        self.split, self.source = split, source
        self.context = _check_int("context", context, 1)
        self.horizon = _check_int("horizon", horizon, 1)
        self.season_length = _check_int("season_length", season_length, 1)
        self.seasons = tuple(_check_int("seasons[i]", p, 2) for p in seasons)
        length = min(len(s) for s in series)
        default_stretch = max(self.horizon, (length // 10) // self.horizon * self.horizon)
        self.test_length = default_stretch if test_length is None else _check_int("test_length", test_length, 1)
        self.val_length = default_stretch if val_length is None else _check_int("val_length", val_length, 1)
        self.train_length = length - self.val_length - self.test_length
        # the training part must hold one whole window and give the MASE denominator
        needed = self.context + self.horizon
        if self.train_length < max(needed, self.season_length + 1):
            raise ValueError(
                f"series of {source} too short: {length} values leave {self.train_length} for training "
                f"after val_length={self.val_length} and test_length={self.test_length}, but one window "
                f"(context {self.context} + horizon {self.horizon}) needs {needed}; use a shorter context "
                f"/ horizon or shorter val / test stretches")
        self.series = [np.asarray(s[:length], dtype=np.float64) for s in series]
        train_parts = [s[:self.train_length] for s in self.series]
        self.stats = np.array([[part.mean(), max(part.std(), 1e-8 * max(abs(part.mean()), 1.0)),
                                max(np.abs(part[self.season_length:] - part[:-self.season_length]).mean(), 1e-12)]
                               for part in train_parts], dtype=np.float64)  # (series, 3): loc, scale, mase_scale
        self.windows = self._window_starts(length, stride)
        if not self.windows:
            raise ValueError(f"split {split!r} of {source} has no window of context {self.context} + horizon "
                             f"{self.horizon}: its stretch is shorter than the horizon")

    def _window_starts(self, length: int, stride: int | None) -> list[tuple[int, int]]:
        """(series, start) of every window of the split; start = index of the first context value."""
        window = self.context + self.horizon
        if self.split == "train":
            stride = 1 if stride is None else _check_int("stride", stride, 1)
            starts = range(0, self.train_length - window + 1, stride)
        else:
            stride = self.horizon if stride is None else _check_int("stride", stride, 1)
            begin = self.train_length + (self.val_length if self.split == "test" else 0)
            end = begin + (self.test_length if self.split == "test" else self.val_length)
            # horizons start at begin, begin + stride, ... and end inside the stretch; contexts reach back
            starts = [h - self.context for h in range(begin, end - self.horizon + 1, stride) if h >= self.context]
        return [(i, s) for i in range(len(self.series)) for s in starts]

    # -- the protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        series, start = self.windows[index]
        values = self.series[series][start:start + self.context + self.horizon]
        loc, scale, mase_scale = self.stats[series]
        return {"values": torch.from_numpy(values.astype(np.float32)),
                "start": torch.tensor(start, dtype=torch.int64),
                "series": torch.tensor(series, dtype=torch.int64),
                "loc": torch.tensor(loc, dtype=torch.float32),
                "scale": torch.tensor(scale, dtype=torch.float32),
                "mase_scale": torch.tensor(mase_scale, dtype=torch.float32)}

    @property
    def num_series(self) -> int:
        return len(self.series)

    def last_context(self, series: int = 0) -> dict[str, object]:
        """The origin of a forecast beyond the data: the final `context` values of `series` (raw,
        float list), their time index `start`, and the series' training `loc` / `scale`."""
        _check_int("series", series, 0)
        if series >= len(self.series):
            raise ValueError(f"series must be < {len(self.series)}, got {series}")
        values = self.series[series][-self.context:]
        return {"values": [float(v) for v in values], "start": len(self.series[series]) - self.context,
                "loc": float(self.stats[series, 0]), "scale": float(self.stats[series, 1])}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source}, split={self.split!r}, windows={len(self)}, "
                f"series={self.num_series}, context={self.context}, horizon={self.horizon}, "
                f"season_length={self.season_length})")


# -- synthetic seasonal series ---------------------------------------------------------------------
def seasonal_series(num_series: int = 32, length: int = 2016, *, day: int = 24, week: int = 168,
                    seed: int = 0) -> list[np.ndarray]:
    """`num_series` hourly-like series of `length` values (float64), fixed by `seed`.

    Each series has a level (5 to 50), a linear trend (-30 % to +60 % of the level over the series),
    a daily profile of period `day` (two random harmonics, 10-50 % of the level), a weekly profile of
    period `week` (a weekend factor on the last 2/7 of the week and a weekly harmonic), noise of
    3-12 % of the level, and in half of the series a level shift of 10-30 % at a random time. Half
    the series combine the parts additively (y = level + level (daily + weekly) + noise), half
    multiplicatively (y = level (1 + daily)(1 + weekly) exp(noise)).
    """
    _check_int("num_series", num_series, 1)
    _check_int("length", length, 2)
    rng = np.random.default_rng(np.random.SeedSequence([_check_int("seed", seed, 0), 0x5EA5]))
    t = np.arange(length, dtype=np.float64)
    out = []
    for i in range(num_series):
        level0 = rng.uniform(5.0, 50.0)
        level = level0 * (1.0 + rng.uniform(-0.3, 0.6) * t / length)
        if rng.uniform() < 0.5:  # a level shift
            when = int(rng.uniform(0.2, 0.95) * length)
            level[when:] += level0 * rng.uniform(0.1, 0.3) * rng.choice((-1.0, 1.0))
        phases = rng.uniform(0.0, 2.0 * np.pi, size=3)
        daily = (rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * t / day + phases[0])
                 + rng.uniform(0.0, 0.15) * np.sin(4 * np.pi * t / day + phases[1]))
        weekend = (t % week) >= week * 5 / 7
        weekly = (rng.uniform(-0.35, 0.2) * weekend
                  + rng.uniform(0.0, 0.1) * np.sin(2 * np.pi * t / week + phases[2]))
        noise = rng.normal(0.0, rng.uniform(0.03, 0.12), size=length)
        if i % 2 == 0:
            y = level + level0 * (daily + weekly) + level0 * noise
        else:
            y = level * (1.0 + daily) * (1.0 + weekly) * np.exp(noise)
        out.append(y)
    return out


class SeasonalSeriesDataset(_SeriesWindows):
    """Windows of `num_series` synthetic hourly-like series (`seasonal_series`, seed `seed`) with
    daily (24) and weekly (168) seasonality, split by time: the last `test_length` values (default
    2 weeks) are test, the `val_length` before them (default 2 weeks) val, the rest (default 8
    weeks) train. Defaults: context 96 (4 days), horizon 24 (one day), season_length 24."""

    def __init__(self, split: str = "train", *, num_series: int = 32, length: int = 2016, context: int = 96,
                 horizon: int = 24, val_length: int = 336, test_length: int = 336, stride: int | None = None,
                 seed: int = 0):
        series = seasonal_series(num_series, length, seed=seed)
        self._setup(series, split, context=context, horizon=horizon, season_length=24, seasons=(24, 168),
                     val_length=val_length, test_length=test_length, stride=stride, source="'seasonal'")


# -- one column of a CSV file ----------------------------------------------------------------------
def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv_column(path: str | os.PathLike, column: str | int | None = None, *, header: bool | None = None,
                    missing: str = "interpolate") -> tuple[np.ndarray, str]:
    """One column of a CSV file as float64 values, with the column's name.

    column: a header name, or a 0-based index (an int, or a string of digits that is no header
    name); None picks the only column whose first data cell is a number. header: None guesses (the
    first row is a header when none of its cells is a number). The delimiter is sniffed (comma,
    semicolon, tab or |). Missing cells (empty, NA, NaN, null, ...) are filled by linear
    interpolation between their neighbours (the nearest value at the ends) with
    missing="interpolate", or raise a ValueError naming the row with missing="error". Text that is
    not a number, or inf, always raises a ValueError naming the row (1-based line of the file) and
    the column.
    """
    path = Path(path).expanduser()
    if missing not in ("interpolate", "error"):
        raise ValueError(f"missing must be 'interpolate' or 'error', got {missing!r}")
    if not path.is_file():
        raise ValueError(f"CSV path {str(path)!r} is not a file")
    with open(path, newline="", encoding="utf-8-sig") as file:
        sample = file.read(65536)
        file.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel  # one column, or nothing to go by: commas
        rows = [(line, row) for line, row in enumerate(csv.reader(file, dialect), start=1)
                if any(c.strip() for c in row)]  # blank lines skipped, line numbers kept
    if not rows:
        raise ValueError(f"CSV file {str(path)!r} is empty")
    first = [c.strip() for c in rows[0][1]]
    if header is None:
        header = not any(_is_number(c) for c in first)
    names = first if header else [str(i) for i in range(len(first))]
    data = rows[1:] if header else rows
    if not data:
        raise ValueError(f"CSV file {str(path)!r} has a header but no data rows")
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if column is None:
        numeric = [i for i, c in enumerate(data[0][1]) if _is_number(c.strip())]
        if len(numeric) != 1:
            raise ValueError(f"CSV file {str(path)!r} has {len(numeric)} numeric columns; pass column= a name "
                             f"or 0-based index (CLI: --data {path.name}:COLUMN); columns: {listing}")
        index = numeric[0]
    elif isinstance(column, str) and column in names:
        index = names.index(column)
    elif (isinstance(column, (int, np.integer)) and not isinstance(column, bool)) or \
            (isinstance(column, str) and column.strip().isdigit()):
        index = int(column)
        if index >= len(names):
            raise ValueError(f"column index {index} is out of range for CSV file {str(path)!r} with "
                             f"{len(names)} columns: {listing}")
    else:
        raise ValueError(f"CSV file {str(path)!r} has no column {column!r}; columns: {listing}")
    name = names[index]
    values = np.empty(len(data))
    for k, (line, row) in enumerate(data):
        cell = row[index].strip() if index < len(row) else ""
        try:
            values[k] = float(cell)
        except ValueError:
            if cell.lower() not in MISSING_MARKERS:
                raise ValueError(f"CSV file {str(path)!r}, line {line}, column {name!r}: {cell!r} is not a "
                                 f"number") from None
            values[k] = math.nan
        if math.isnan(values[k]) and missing == "error":
            raise ValueError(f"CSV file {str(path)!r}, line {line}, column {name!r}: missing value "
                             f"({cell!r}); fill it or pass missing='interpolate'")
        if math.isinf(values[k]):
            raise ValueError(f"CSV file {str(path)!r}, line {line}, column {name!r}: {cell!r} is not finite")
    known = ~np.isnan(values)
    if not known.any():
        raise ValueError(f"CSV file {str(path)!r}, column {name!r} holds no numbers")
    if not known.all():
        positions = np.arange(len(values))
        values = np.interp(positions, positions[known], values[known])
    return values, name


def guess_season_length(values: np.ndarray, max_lag: int | None = None) -> int:
    """The seasonal period of a series from the autocorrelation of its linearly detrended values: the
    lag in 2..max_lag (default a third of the length, at most 400) with the highest autocorrelation
    after the autocorrelation first drops below zero; 1 (no season) when it never does or that peak
    is below 0.3."""
    x = np.asarray(values, dtype=np.float64)
    x = x - x.mean()
    if len(x) < 8 or not x.any():
        return 1
    max_lag = min(len(x) // 3, 400) if max_lag is None else max_lag
    # detrend with a linear fit so a trend does not make every lag look alike
    t = np.arange(len(x))
    x = x - np.polyval(np.polyfit(t, x, 1), t)
    denominator = float(x @ x)
    if denominator <= 0 or max_lag < 2:
        return 1
    acf = np.array([x[:-lag] @ x[lag:] / denominator for lag in range(1, max_lag + 1)])  # lag 1..max_lag
    below = np.nonzero(acf < 0)[0]
    if not len(below):
        return 1
    lag = int(below[0] + np.argmax(acf[below[0]:])) + 1
    return lag if lag >= 2 and acf[lag - 1] >= 0.3 else 1


class CSVSeriesDataset(_SeriesWindows):
    """Windows of one numeric column of a CSV file (rows in time order; `read_csv_column` says how
    the column, header, delimiter and missing cells are handled), split by time as in the module
    docstring: by default the last 10 % (a whole number of horizons, at least one) is test and the
    10 % before it val.

    season_length None guesses the period from the training part's autocorrelation
    (`guess_season_length`; 1 when there is none); horizon None is the season (8 without one);
    context None is 4 seasons or 2 horizons, at least 16 and at most 192 values (and no more than
    the training part leaves). Time index 0 is the first data row.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", column: str | int | None = None, *,
                 context: int | None = None, horizon: int | None = None, season_length: int | None = None,
                 val_length: int | None = None, test_length: int | None = None, stride: int | None = None,
                 header: bool | None = None, missing: str = "interpolate"):
        path = Path(path).expanduser()
        if path.is_dir():
            raise ValueError(f"CSV data must be one file, got the folder {str(path)!r}")
        values, self.column = read_csv_column(path, column, header=header, missing=missing)
        self.path = path
        if season_length is None:
            season_length = guess_season_length(values[: max(len(values) * 8 // 10, 1)])
        if horizon is None:
            horizon = season_length if season_length > 1 else 8
        if context is None:
            context = min(max(4 * season_length, 2 * horizon, 16), 192)
            # leave room for one training window when the series is short
            stretch = max(horizon, (len(values) // 10) // horizon * horizon)
            room = len(values) - (val_length or stretch) - (test_length or stretch) - horizon
            context = max(1, min(context, room))
        seasons = (season_length,) if season_length > 1 else ()
        self._setup([values], split, context=context, horizon=horizon, season_length=season_length,
                    seasons=seasons, val_length=val_length, test_length=test_length, stride=stride,
                    source=f"{str(path)!r} column {self.column!r}")
