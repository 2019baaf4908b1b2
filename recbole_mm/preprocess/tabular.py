"""Tabular two-task data -> multi-task data sets (docs/multitask.md, "Your own tabular data").

    python -m recbole_mm.preprocess.tabular --spec my_spec.yaml --out dataset/
    python -m recbole_mm.preprocess.tabular --preset census_income --src ../shared/datasets/census_income --out dataset/

The preset ``census_income`` (UCI Census-Income (KDD), the MMoE paper's data) has the tasks
income > 50k (task 1, ``click``) and never married (task 2, ``conversion``) and four domain
splits, each written as ``census_<split>_src`` / ``census_<split>_tgt``: ``sex`` (Male ->
Female), ``sex_reverse`` (Female -> Male), ``citizenship`` (native-born in the United States ->
foreign-born, not a citizen), ``year`` (survey year 94 -> 95). ``instance_weight`` (a survey
weight) is dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Dict, List, Optional

from recbole_mm.data.atomic_files import DataFileError
from recbole_mm.data.tabular import TabularSpec, convert_tabular

CENSUS_COLUMNS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour", "hs_college",
    "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat",
    "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18", "country_father",
    "country_mother", "country_self", "citizenship", "own_or_self", "vet_question", "vet_benefits",
    "weeks_worked", "year", "income_50k",
]
CENSUS_NUMERICAL = ["age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp",
                    "weeks_worked"]
CENSUS_TASKS = [{"name": "income_50k", "label": 'income_50k == "50000+."'},
                {"name": "never_married", "label": 'marital_stat == "Never married"'}]
# split -> (domain column, source values, target values)
CENSUS_DOMAINS = {
    "sex": ("sex", ["Male"], ["Female"]),
    "sex_reverse": ("sex", ["Female"], ["Male"]),
    "citizenship": ("citizenship", ["Native- Born in the United States"], ["Foreign born- Not a citizen of U S"]),
    "year": ("year", ["94"], ["95"]),
}
# UCI's file names: the training file when present, the test file (the only one in ../shared/datasets)
CENSUS_TRAIN, CENSUS_TEST = "census-income.data.gz", "census-income.test.gz"


def census_spec(src: str, split: str, chunksize: Optional[int] = 200000) -> TabularSpec:
    """The preset spec of one domain split. With UCI's training file in ``src`` it is the training
    part and the test file the test part; with the test file only, that file is split per domain
    (test: a stratified 20 % of each domain's rows)."""
    column, source, target = CENSUS_DOMAINS[split]
    has_train = os.path.isfile(os.path.join(src, CENSUS_TRAIN))
    files = {"train": CENSUS_TRAIN, "test": CENSUS_TEST} if has_train else {"train": CENSUS_TEST}
    labels = {"income_50k", "marital_stat"}
    categorical = [c for c in CENSUS_COLUMNS if c not in CENSUS_NUMERICAL + ["instance_weight", column] and c not in labels]
    raw = {
        "name": f"census_{split}", "files": files, "header": False, "columns": CENSUS_COLUMNS,
        "categorical": categorical, "numerical": CENSUS_NUMERICAL, "drop": ["instance_weight"],
        "tasks": CENSUS_TASKS, "domain": {"column": column, "source": source, "target": target},
        "chunksize": chunksize,
    }
    return TabularSpec.from_dict(raw, src, where=f"preset census_income ({split})")


PRESETS = {"census_income": (census_spec, list(CENSUS_DOMAINS))}


def summary_lines(payloads: Dict[str, dict]) -> List[str]:
    """One line per written data set: rows per split and positive rates of both tasks."""
    lines = []
    for domain, payload in payloads.items():
        name = payload[f"{domain}_dataset"]
        tasks = [payload["tasks"][label]["name"] for label in ("click", "conversion")]
        parts = ", ".join(
            f"{part} {n} ({tasks[0]} {payload['positive_rate'][part]['click']:.3f}, "
            f"{tasks[1]} {payload['positive_rate'][part]['conversion']:.3f})" if n else f"{part} 0"
            for part, n in payload["rows"].items())
        lines.append(f"{name}: {parts}")
    return lines


def main(argv=None) -> Dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", help="YAML spec (keys: recbole_mm.data.tabular.TabularSpec, docs/multitask.md)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a built-in spec instead of --spec")
    parser.add_argument("--src", default=None, help="folder of the input files (default: the spec's folder)")
    parser.add_argument("--split", action="append", default=None, choices=sorted(CENSUS_DOMAINS),
                        help="the preset's domain split(s) to write (default: all)")
    parser.add_argument("--out", default="dataset", help="folder that receives the data set folders")
    parser.add_argument("--chunksize", type=int, default=None, help="rows per read (overrides the spec)")
    args = parser.parse_args(argv)
    if bool(args.spec) == bool(args.preset):
        parser.error("give --spec or --preset (one of them)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if args.spec:
            specs = [TabularSpec.from_yaml(args.spec, args.src)]
        else:
            make, splits = PRESETS[args.preset]
            if args.src is None:
                parser.error("--preset needs --src (the folder of the raw files)")
            specs = [make(args.src, split) for split in (args.split or splits)]
        payloads = {}
        for spec in specs:
            if args.chunksize:
                spec.chunksize = args.chunksize
            start = time.time()
            written = convert_tabular(spec, args.out)
            for line in summary_lines(written):
                print(line)
            print(f"written to {args.out}/ in {time.time() - start:.1f} s")
            payloads.update({written[d][f"{d}_dataset"]: written[d] for d in written})
    except (DataFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    return payloads


if __name__ == "__main__":
    main()
