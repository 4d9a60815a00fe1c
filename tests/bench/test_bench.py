"""The `genkernels bench` table runs end to end (tiny sizes) and records what it measured."""
import json

from genkernels.bench import main


def test_bench_writes_every_provider(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--numel", "4096", "--batch", "4", "--no-compile", "--suite", "diffusion", "overhead",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["torch"]
    rows = result["diffusion"]
    ops = {r["op"] for r in rows}
    assert ops == {"q_sample", "diffusion_loss", "diffusion_loss_fwd_bwd", "ddpm_step", "ddim_step"}
    assert {r["provider"] for r in rows} >= {"eager", "cpu"}
    assert all(r["ms"] > 0 and r["GB/s"] > 0 for r in rows)
    assert len(result["overhead"]) == 5
    assert "speedup_vs_eager" in capsys.readouterr().out
