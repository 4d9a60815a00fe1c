"""The flow_memory bench suite runs end to end on a tiny flow, through `genkernels bench` and its
script, and records memory, time and the gradient check."""
import json

from genkernels.bench import flow_memory, main


def test_flow_memory_suite_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(flow_memory, "CONFIG", flow_memory.TINY)
    out = tmp_path / "bench.json"
    assert main(["--suite", "flow_memory", "--device", "cpu", "--json", str(out)]) == 0
    stored, recompute = json.loads(out.read_text())["flow_memory"]
    assert (stored["mode"], recompute["mode"]) == ("stored", "recompute")
    assert recompute["saved_peak_MB"] < stored["saved_peak_MB"] and recompute["memory_reduction"] > 1
    assert recompute["relative_grad_difference"] < 1e-3
    assert stored["step_s"] > 0 and recompute["time_ratio"] > 0


def test_flow_memory_script(tmp_path):
    out = tmp_path / "flow.json"
    assert flow_memory.main(["--device", "cpu", "--batch", "1", "--blocks", "2", "--hidden", "4", "--repeat", "1",
                             "--depths", "2", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["device"] == "cpu" and len(result["results"]) == 2
    small, large = result["memory_by_depth"]
    assert large["stored_saved_peak_MB"] > small["stored_saved_peak_MB"]
    assert large["recompute_saved_peak_MB"] == small["recompute_saved_peak_MB"]
