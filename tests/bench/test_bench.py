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


def test_speed_benchmark_has_stock_whole_sequence_rows(tiny_data_path, tmp_path):
    rows = speed.main([
        "--dataset=tiny", f"--data_path={tiny_data_path}", "--hidden_size=16", "--train_batch_size=256",
        "--settings=stock", "--only=2", f"--out={tmp_path}", "--threads=1",
    ])
    assert [r["setting"] for r in rows] == ["SASRec (stock RecBole)", "SASRec + stock_whole_sequence"]
    # one row per user sequence: fewer, fuller batches for the same target positions
    assert rows[1]["train_batches"] <= rows[0]["train_batches"]


def test_compare_writes_table_and_resumes(tiny_data_path, tmp_path, capsys):
    from recbole_mm.bench import compare

    out = tmp_path / "cmp"
    args = ["--models=ANT,Pop,ANT:hidden_size=8:inner_size=8", "--dataset=tiny", f"--out={out}", f"--data_path={tiny_data_path}",
            "--epochs=2", "--hidden_size=16", "--inner_size=16", "--n_experts=2", "--train_batch_size=256",
            "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING", "--paper=ant"]
    rows = compare.main(args)
    assert [r["model"] for r in rows] == ["ANT", "Pop", "ANT:hidden_size=8:inner_size=8"]
    assert all("error" not in r for r in rows)
    assert rows[2]["parameters"] < rows[0]["parameters"]  # the row's own overrides were applied
    table = (out / "comparison.md").read_text()
    assert "| ANT |" in table and "| Pop |" in table and "| ANT:hidden_size=8:inner_size=8 |" in table
    csv_text = (out / "comparison.csv").read_text().splitlines()
    assert csv_text[0].startswith("model,recall@10") and len(csv_text) == 4
    import csv

    paper = {r["model"]: r["paper_recall@10"] for r in csv.DictReader(csv_text)}
    # a row with settings of its own carries its model's published figure
    assert paper["ANT"] == paper["ANT:hidden_size=8:inner_size=8"] == "0.1334" and paper["Pop"] == ""
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    again = compare.main(args)  # resumes: nothing is trained twice
    assert "ANT: done before, skipped" in capsys.readouterr().out
    assert again[0]["test_result"] == rows[0]["test_result"]
