"""python -m recbole_mm.bench.report: every run's results JSON under a folder in one table, the
settings that differ between runs as columns, a benchmark's copy of a run counted once."""

import csv
import json
import os

from recbole_mm.bench import report


def write_run(folder, name, model, settings, recall, seconds, log_file=None, **extra):
    os.makedirs(folder, exist_ok=True)
    result = {"model": model, "dataset": "tiny", "test_result": {"recall@10": recall, "ndcg@10": recall / 2},
              "best_valid_score": recall / 2 + 0.01, "valid_metric": "NDCG@10", "epochs_trained": len(seconds),
              "train_epoch_seconds": seconds, "settings": settings,
              "log_file": log_file or os.path.join(folder, name + ".log"), **extra}
    with open(os.path.join(folder, name + ".json"), "w") as f:
        json.dump(result, f)
    return result


def test_report_gathers_runs_with_their_differing_settings(tmp_path, capsys):
    log = tmp_path / "log"
    write_run(str(log / "ANT"), "ANT-a", "ANT", {"learning_rate": 0.001, "epochs": 5}, 0.30, [2.0, 4.0])
    write_run(str(log / "ANT"), "ANT-b", "ANT", {"learning_rate": 0.0005, "epochs": 5}, 0.35, [3.0])
    sasrec = write_run(str(log / "SASRec"), "SASRec-c", "SASRec", {"epochs": 5, "stock_length_bucketing": True},
                       0.20, [1.0, 1.0, 1.0])
    write_run(str(log / "compare"), "SASRec", "SASRec", sasrec["settings"], 0.20, [1.0, 1.0, 1.0],
              log_file=sasrec["log_file"])  # a benchmark's copy of the same run
    with open(log / "settings.json", "w") as f:
        json.dump({"models": ["SASRec"]}, f)  # not a run: ignored
    (log / "broken.json").write_text("{")

    rows = report.main([str(log)])
    assert [r["model"] for r in rows] == ["ANT", "ANT", "SASRec"]
    assert list(rows[0])[:4] == ["model", "dataset", "learning_rate", "stock_length_bucketing"]  # epochs: same
    assert [r["learning_rate"] for r in rows] == [0.001, 0.0005, None]
    assert rows[0]["test recall@10"] == 0.30 and rows[0]["s/epoch"] == 3.0 and rows[2]["epochs trained"] == 3
    text = (log / "report.md").read_text()
    assert "| ANT | tiny | 0.0005 | – | 0.3500 | 0.1750 | 0.1850 | 1 | 3.00 |" in text
    assert text.startswith("3 runs under") and text == capsys.readouterr().out.split("written:")[0].rstrip("\n") + "\n"
    with open(log / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["ANT", "ANT", "SASRec"] and table[2]["stock_length_bucketing"] == "True"
