"""The speed benchmark runs end to end on tiny data and writes its table."""

import os

from recbole_mm.bench import speed


def test_speed_benchmark_writes_table(tiny_data_path, tmp_path):
    out = tmp_path / "speed"
    rows = speed.main([
        "--dataset=tiny", f"--data_path={tiny_data_path}", "--hidden_size=16", "--train_batch_size=256",
        "--settings=all", "--only=1,4", f"--out={out}", "--threads=1",
    ])
    assert [r["model"] for r in rows] == ["SASRec", "ANT", "ANT"]
    for row in rows:
        assert row["train_epoch_seconds"] > 0 and row["eval_seconds"] > 0 and row["peak_rss_mb"] > 50
    # whole sequences make fewer, fuller batches than prefix samples
    assert rows[2]["train_batches"] <= rows[1]["train_batches"]
    table = (out / "speed-tiny-all.md").read_text()
    assert "| SASRec (stock RecBole) |" in table and "1.0x" in table
    assert os.path.isfile(out / "speed-tiny-all.json")
