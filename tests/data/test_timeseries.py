"""Time-series windows: time splits without leakage, train-only scaling, CSV columns, errors."""
import numpy as np
import pytest
import torch

from genkernels.data import get_dataset
from genkernels.data.timeseries import (CSVSeriesDataset, SeasonalSeriesDataset, guess_season_length,
                                        read_csv_column, seasonal_series)

SMALL = {"num_series": 3, "length": 400, "context": 24, "horizon": 12, "val_length": 48, "test_length": 48}


def write_csv(path, rows, header="date,units,price"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def series_csv(path, values, name="units"):
    rows = [f"2024-01-{i:05d},{v},{2 * v}" for i, v in enumerate(values)]
    return write_csv(path, rows, header=f"date,{name},price")


def test_splits_are_by_time_without_overlap():
    sets = {s: SeasonalSeriesDataset(s, **SMALL) for s in ("train", "val", "test")}
    train_len = 400 - 48 - 48
    assert sets["train"].train_length == train_len
    assert all(s.kind == "series" for s in sets.values())
    horizons = {}
    for split, dataset in sets.items():
        for i in range(len(dataset)):
            item = dataset[i]
            start = int(item["start"])
            assert item["values"].shape == (36,) and item["values"].dtype == torch.float32
            first = start + 24  # first horizon value
            horizons.setdefault(split, set()).update((int(item["series"]), t) for t in range(first, first + 12))
            if split == "train":
                assert start + 36 <= train_len  # the whole window inside the training part
    val_t = {t for _, t in horizons["val"]}
    test_t = {t for _, t in horizons["test"]}
    train_t = {t for _, t in horizons["train"]}
    assert val_t == set(range(train_len, train_len + 48))     # the horizons tile the stretch
    assert test_t == set(range(train_len + 48, 400))
    assert max(train_t) < train_len
    assert len(sets["val"]) == len(sets["test"]) == 3 * 4
    # a window's values are the series' values at its time indices
    item = sets["test"][5]
    series = sets["test"].series[int(item["series"])]
    np.testing.assert_allclose(item["values"].numpy(), series[int(item["start"]):int(item["start"]) + 36], rtol=1e-6)


def test_seasonal_series_are_fixed_by_the_seed():
    a, b, c = seasonal_series(4, 300, seed=0), seasonal_series(4, 300, seed=0), seasonal_series(4, 300, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], c[0])
    # daily seasonality: values a day apart are closer than values half a day apart
    x = a[0]
    assert np.abs(x[24:] - x[:-24]).mean() < np.abs(x[12:] - x[:-12]).mean()


def test_scaling_comes_from_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    values = 10 + np.sin(np.arange(300) * 2 * np.pi / 12) + rng.normal(0, 0.1, 300)
    changed = values.copy()
    changed[-60:] *= 100.0  # only the val / test stretches differ
    kwargs = {"column": "units", "context": 24, "horizon": 12, "season_length": 12, "val_length": 24,
              "test_length": 36}
    a = CSVSeriesDataset(series_csv(tmp_path / "a.csv", values), "test", **kwargs)
    b = CSVSeriesDataset(series_csv(tmp_path / "b.csv", changed), "test", **kwargs)
    np.testing.assert_allclose(a.stats, b.stats)
    part = values[:240]
    np.testing.assert_allclose(a.stats[0], [part.mean(), part.std(), np.abs(part[12:] - part[:-12]).mean()], rtol=1e-9)
    assert float(b[0]["loc"]) == pytest.approx(part.mean(), rel=1e-6)
    assert float(b[len(b) - 1]["values"][-1]) == pytest.approx(changed[-1], rel=1e-6)


def test_csv_column_by_name_and_by_index(tmp_path):
    path = series_csv(tmp_path / "sales.csv", [float(i % 7) for i in range(200)])
    by_name = get_dataset(path, "train", column="units", horizon=7, context=14)
    by_index = get_dataset(str(path), "train", column=1, horizon=7, context=14)
    by_cli = get_dataset(f"{path}:units", "train", horizon=7, context=14)
    by_cli_index = get_dataset(f"{path}:1", "train", horizon=7, context=14)
    for dataset in (by_name, by_index, by_cli, by_cli_index):
        assert dataset.kind == "series" and dataset.column == "units"
        assert torch.equal(dataset[3]["values"], by_name[3]["values"])
    price = get_dataset(f"{path}:price", "train", horizon=7, context=14)
    assert torch.equal(price[3]["values"], 2 * by_name[3]["values"])
    assert by_name.season_length == 7 and by_name.seasons == (7,)  # guessed from the autocorrelation


def test_csv_header_delimiter_and_missing_values(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("1;5\n2;\n3;7\n4;NA\n5;9\n")  # no header, semicolons, two gaps
    values, name = read_csv_column(path, 1)
    assert name == "1"
    np.testing.assert_allclose(values, [5, 6, 7, 8, 9])  # interpolated
    with pytest.raises(ValueError, match="line 2, column '1': missing value"):
        read_csv_column(path, 1, missing="error")
    # one numeric column: picked without being named
    single = write_csv(tmp_path / "single.csv", [f"d{i},{i}" for i in range(5)], header="day,count")
    assert read_csv_column(single)[1] == "count"


def test_csv_errors_name_the_row_and_column(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["a,1,2", "b,2,x3", "c,3,4"])
    with pytest.raises(ValueError, match=r"line 3, column 'price': 'x3' is not a number"):
        read_csv_column(path, "price")
    with pytest.raises(ValueError, match=r"no column 'volume'; columns: 0: 'date', 1: 'units', 2: 'price'"):
        get_dataset(path, column="volume")
    with pytest.raises(ValueError, match="no column 'volume'.*'units'"):
        get_dataset(f"{path}:volume")
    with pytest.raises(ValueError, match="column index 5 is out of range"):
        read_csv_column(path, 5)
    with pytest.raises(ValueError, match="2 numeric columns; pass column="):
        read_csv_column(path)
    with pytest.raises(ValueError, match="given too"):
        get_dataset(f"{path}:units", column="price")
    with pytest.raises(ValueError, match="too short"):
        get_dataset(f"{path}:units")
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset(f"{tmp_path / 'missing.csv'}:units")
    with pytest.raises(ValueError, match="split must be"):
        SeasonalSeriesDataset("holdout", **SMALL)
    with pytest.raises(TypeError, match="horizon must be an int"):
        SeasonalSeriesDataset("train", **{**SMALL, "horizon": 2.5})


def test_guess_season_length_and_last_context():
    t = np.arange(600)
    assert guess_season_length(np.sin(2 * np.pi * t / 12) + 0.01 * t) == 12
    assert guess_season_length(np.random.default_rng(0).normal(size=600)) == 1
    dataset = SeasonalSeriesDataset("train", **SMALL)
    origin = dataset.last_context(2)
    assert origin["start"] == 400 - 24 and len(origin["values"]) == 24
    np.testing.assert_allclose(origin["values"], dataset.series[2][-24:])
    assert origin["loc"] == pytest.approx(dataset.stats[2, 0])
    with pytest.raises(ValueError, match="series must be < 3"):
        dataset.last_context(3)
