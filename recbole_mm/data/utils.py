"""Data set creation and data loaders for the runner (RecBole's ``create_dataset`` /
``data_preparation`` plus the plugin's data set classes and training loaders).

The choice follows the declared model type (``config["MODEL_TYPE"]``) and the stage:
multi-domain pre-training, multi-task (``MMModelType.MULTITASK``), adversarial adaptation
(``MMModelType.ADVERSARIAL``: the target plus a source data set), sequential (plugin or stock).
Checking a data set never writes one: :func:`ensure_embedded_datasets` is the explicit step
that writes the embedded synthetic data sets, and the runner takes it.
"""

from __future__ import annotations

import importlib
import os
from logging import getLogger
from typing import List, Optional, Tuple

import pandas as pd
import torch
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.utils import ModelType

from recbole_mm.config import ConfigError
from recbole_mm.data.aliexpress import LABELS
from recbole_mm.data.atomic_files import check_atomic_file, check_column_types, find_unreadable_line
from recbole_mm.data.batching import PrefixTrainDataLoader, SequenceTrainDataLoader, WholeSequenceRowsLoader
from recbole_mm.data.dataset import BenchmarkSequentialDataset
from recbole_mm.data.features import feature_folders
from recbole_mm.data.multidomain import MultiDomainDataset, MultiDomainTrainLoader, domain_names
from recbole_mm.data.multitask import MultiTaskDataLoader, MultiTaskDataset, SourceTargetLoader, multitask_dataloaders
from recbole_mm.data.synthetic import SYNTHETIC_DATASETS, ensure_synthetic
from recbole_mm.data.synthetic_countries import SYNTHETIC_COUNTRIES, write_synthetic_countries
from recbole_mm.data.tabular import read_layout
from recbole_mm.enum_type import MULTITASK_TYPES, MMModelType
from recbole_mm.utils import get_model

SYNTHETIC_COUNTRY_NAMES = {spec.name for spec in SYNTHETIC_COUNTRIES}


def data_root(config) -> str:
    """The folder that holds the data set folders (RecBole has appended the data set name to
    ``data_path``)."""
    return os.path.dirname(os.path.normpath(config["data_path"]))


def run_dataset_names(config) -> List[str]:
    """Every data set a run reads: its domains (``A,B,C`` with ``stage: pretrain``) and, for an
    adversarial adaptation, ``source_dataset``."""
    names = domain_names(config["dataset"])
    if config["MODEL_TYPE"] == MMModelType.ADVERSARIAL and config["source_dataset"]:
        names.append(config["source_dataset"])
    return names


def ensure_embedded_datasets(config) -> List[str]:
    """Write the embedded synthetic data sets that this run names and that are missing (the
    only place that writes data on a run's behalf); returns their names. Each folder appears
    complete or not at all, and one that another run wrote meanwhile is kept: runs that use a data
    set for the first time at once all read one complete folder."""
    written = []
    root = data_root(config)
    for name in run_dataset_names(config):
        if os.path.isdir(os.path.join(root, name)):
            continue
        if name in SYNTHETIC_DATASETS:
            ensure_synthetic(name, root)
        elif name in SYNTHETIC_COUNTRY_NAMES:
            write_synthetic_countries(root, [s for s in SYNTHETIC_COUNTRIES if s.name == name], overwrite=False)
        else:
            continue
        written.append(name)
    return written


def train_order_state(loader) -> dict:
    """What fixes a training loader's next batch orders, as plain data (tensors, numbers): the
    plugin's loaders say (``order_state``); RecBole's shuffle with their torch ``generator``."""
    if hasattr(loader, "order_state"):
        return loader.order_state()
    generator = getattr(loader, "generator", None)
    return {"generator": generator.get_state()} if isinstance(generator, torch.Generator) else {}


def load_train_order_state(loader, state: dict) -> None:
    """Continue the batch orders saved by :func:`train_order_state` (a resumed run's next epoch
    gets the batches of the uninterrupted run's)."""
    if set(state) != set(train_order_state(loader)):
        raise ValueError(f"the resume file's batch order ({sorted(state)}) is of another training loader than this "
                         f"run's ({type(loader).__name__}): keep the loader settings (`train_whole_sequence`, "
                         f"`length_bucketing`, `stock_length_bucketing`, `stock_whole_sequence_rows`, "
                         f"`stock_whole_sequence`)")
    if hasattr(loader, "load_order_state"):
        loader.load_order_state(state)
    elif "generator" in state:
        loader.generator.set_state(state["generator"])


def check_dataset_files(config) -> None:
    """Fail early, naming the path, when a data set's folder or files are missing (writes nothing)."""
    data_path = config["data_path"]  # RecBole has already joined <data_path>/<dataset>
    name = config["dataset"]
    if not os.path.isdir(data_path):
        raise FileNotFoundError(
            f"data set folder {data_path} not found. Point --data_path at the folder that holds "
            f"{name}/ (for the team's real data: --data_path=../shared/datasets), build it with the "
            f"preprocessing (docs/preprocess.md), or use the embedded synthetic data "
            f"(--dataset={next(iter(SYNTHETIC_DATASETS))})"
        )
    _check_item_attribute_file(config, data_path, name)
    parts = config["benchmark_filename"]
    if parts:
        for part in parts:
            path = os.path.join(data_path, f"{name}.{part}.inter")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} not found: config key `benchmark_filename` = {list(parts)} asks for "
                    f"{name}.<part>.inter files in {data_path}"
                )
    elif not os.path.isfile(os.path.join(data_path, f"{name}.inter")):
        raise FileNotFoundError(f"{os.path.join(data_path, name + '.inter')} not found")
    check_atomic_files(config)


def atomic_files(config) -> List[Tuple[str, str]]:
    """``(path, source)`` of every atomic file the run's data set reads: its ``.inter`` file(s),
    and its ``.item`` / ``.user`` files where present and loaded."""
    data_path, name = config["data_path"], config["dataset"]
    parts = config["benchmark_filename"]
    files = [(os.path.join(data_path, f"{name}.{part}.inter" if parts else f"{name}.inter"), "inter")
             for part in (parts or [None])]
    load_col = config["load_col"]
    for source in ("item", "user"):
        if isinstance(load_col, dict) and source not in load_col:
            continue  # RecBole does not read it
        path = _first_file(feature_folders(config["feature_dir"], data_path, name), f"{name}.{source}")
        if path:
            files.append((path, source))
    return files


def _first_file(folders: List[str], file_name: str) -> Optional[str]:
    return next((os.path.join(f, file_name) for f in folders if os.path.isfile(os.path.join(f, file_name))), None)


def required_columns(config, source: str) -> Tuple[List[str], str]:
    """The columns an atomic file of ``source`` must have, and who needs them: the AliExpress
    layout for multi-task models; else the file's ``load_col`` entry (RecBole would skip a listed
    column the file lacks and train without it), less the history fields RecBole derives itself
    when the data set is not pre-split; else the user and item id fields."""
    if config["MODEL_TYPE"] in MULTITASK_TYPES and source == "inter":
        layout = read_layout(config["data_path"], config["dataset"])
        return layout.columns, "the AliExpress layout of multi-task models (or <D>.tabular.json's), docs/multitask.md"
    load_col = config["load_col"]
    if isinstance(load_col, dict) and source in load_col:
        columns = list(load_col[source])
        if not config["benchmark_filename"]:
            derived = (config["LIST_SUFFIX"] or "_list", config["ITEM_LIST_LENGTH_FIELD"])
            columns = [c for c in columns if not c.endswith(derived[0]) and c != derived[1]]
        return columns, f"config key `load_col` {source}"
    fields = {"inter": ("USER_ID_FIELD", "ITEM_ID_FIELD"), "item": ("ITEM_ID_FIELD",), "user": ("USER_ID_FIELD",)}
    keys = [key for key in fields[source] if config[key]]
    return [config[key] for key in keys], "config key(s) " + ", ".join(f"`{key}`" for key in keys)


def check_atomic_files(config) -> None:
    """Every atomic file of the run, read as far as its header and first row: ``DataFileError``
    naming the file for an empty or header-only file, a header that is not ``name:type``, bytes that
    are not ``encoding``, a column the run needs that is missing (or renamed)."""
    sep, encoding = config["field_separator"] or "\t", config["encoding"] or "utf-8"
    for path, source in atomic_files(config):
        required, why = required_columns(config, source)
        columns = check_atomic_file(path, required, why, sep, encoding)
        if config["MODEL_TYPE"] in MULTITASK_TYPES and source == "inter":
            layout = read_layout(config["data_path"], config["dataset"])
            check_column_types(path, columns, layout.categorical + layout.numerical + LABELS, "float")


def _is_read_error(err: Exception) -> bool:
    """Whether RecBole's reading of an atomic file failed (pandas could not parse a line or a float)."""
    if isinstance(err, (UnicodeDecodeError, pd.errors.ParserError)):
        return True
    return any(text in str(err).lower() for text in ("could not convert", "unable to convert"))


def _load_dataset(config, make):
    """``make()``; when RecBole fails to read a file (bytes not in the encoding, a float cell that
    is no number, a row of another length), a ``DataFileError`` naming the file, line and column."""
    try:
        return make()
    except (UnicodeDecodeError, ValueError) as err:
        if not _is_read_error(err):
            raise
        sep, encoding = config["field_separator"] or "\t", config["encoding"] or "utf-8"
        for path, _ in atomic_files(config):
            found = find_unreadable_line(path, sep, encoding, config["seq_separator"] or " ")
            if found is not None:
                raise found from err
        raise


# Stock models that read item attribute fields from a <D>.item file, and the keys naming them
ATTRIBUTE_MODELS = {"FDSA": "selected_features", "S3Rec": "item_attribute"}


def _check_item_attribute_file(config, data_path: str, name: str) -> None:
    key = ATTRIBUTE_MODELS.get(config["model"])
    if key is None or not config[key]:
        return
    places = feature_folders(config["feature_dir"], data_path, name)
    if not any(os.path.isfile(os.path.join(p, f"{name}.item")) for p in places):
        raise FileNotFoundError(
            f"{config['model']} reads the item attribute(s) {config[key]} (config key `{key}`) from "
            f"{name}.item, found in neither {' nor '.join(places)}. For a benchmark folder with "
            f"{name}.text: python -m recbole_mm.preprocess.attributes --src <folder> --out {places[-1]}"
        )


def create_dataset(config):
    """The run's data set: with ``stage: pretrain`` a :class:`MultiDomainDataset` of every domain;
    for multi-task and adversarial models a :class:`MultiTaskDataset` (the target); for plugin
    sequential models their ``dataset_class``; for stock sequential models on pre-split
    benchmark files :class:`BenchmarkSequentialDataset`; otherwise RecBole's choice."""
    if config["stage"] == "pretrain":
        return create_multidomain_dataset(config)
    check_dataset_files(config)
    if config["MODEL_TYPE"] in MULTITASK_TYPES:
        return _load_dataset(config, lambda: MultiTaskDataset(config))
    dataset_class = getattr(get_model(config["model"]), "dataset_class", None)
    if dataset_class is None and config["MODEL_TYPE"] == ModelType.SEQUENTIAL and config["benchmark_filename"]:
        recbole_datasets = importlib.import_module("recbole.data.dataset")
        if not hasattr(recbole_datasets, config["model"] + "Dataset"):
            dataset_class = BenchmarkSequentialDataset
    if dataset_class is None:
        return _load_dataset(config, lambda: recbole_create_dataset(config))
    return _load_dataset(config, lambda: dataset_class(config))


def create_multidomain_dataset(config) -> MultiDomainDataset:
    """Every domain of ``config["dataset"]`` (``A,B,C``) as its own data set (own item ids, own
    feature files, own ``properties/dataset/<domain>.yaml``), item ids laid side by side."""
    names = domain_names(config["dataset"])
    datasets = []
    for name in names:
        datasets.append(create_dataset(config.for_dataset(name, stage="train")))
        getLogger().info(datasets[-1])
    multi = MultiDomainDataset(datasets, names)
    if hasattr(config, "given") and not config.given("modalities"):  # the domains found their files
        config["modalities"] = list(multi.item_features)
    return multi


def prepare_data(config, dataset) -> Tuple[object, object, object]:
    """The train / valid / test loaders of the run (valid and test are None for pre-training).

    Sequential models: RecBole's loaders; with ``train_whole_sequence`` (plugin models that
    support it) the training loader yields whole sequences (recbole_mm.data.batching)."""
    if config["stage"] == "pretrain":
        return MultiDomainTrainLoader(config, dataset, shuffle=True), None, None
    if config["MODEL_TYPE"] == MMModelType.MULTITASK:
        return multitask_dataloaders(config, dataset)
    if config["MODEL_TYPE"] == MMModelType.ADVERSARIAL:
        return adversarial_dataloaders(config, dataset)
    return sequential_dataloaders(config, dataset)


def adversarial_dataloaders(config, dataset):
    """The target's loaders, the training loader paired with the source data set's training
    split (config key ``source_dataset``) batch by batch."""
    name = config["source_dataset"]
    if not name:
        raise ValueError("config key `source_dataset` is required: the data set the source model was trained on")
    source_config = config.for_dataset(name, state="WARNING")
    check_dataset_files(source_config)
    source_train, _, _ = _load_dataset(source_config, lambda: MultiTaskDataset(source_config)).build()
    train, valid, test = multitask_dataloaders(config, dataset)
    source = MultiTaskDataLoader(config, source_train, config["train_batch_size"], shuffle=True)
    return SourceTargetLoader(source, train), valid, test


def sequential_dataloaders(config, dataset):
    """RecBole's loaders, with the plugin's training loaders where a setting asks for them."""
    model_class = get_model(config["model"])
    train_data, valid_data, test_data = data_preparation(config, dataset)
    stock_model = not hasattr(model_class, "supports_whole_sequence")
    if uses_stock_whole_sequence(config, model_class):
        getLogger().info(f"{config['model']}: one training row per user sequence, loss at every position "
                         f"(stock_whole_sequence)")
        return (SequenceTrainDataLoader(config, train_data._dataset, shuffle=config["shuffle"], whole_sequences=True),
                valid_data, test_data)
    if stock_model and config["stock_whole_sequence_rows"]:
        train_data = _stock_whole_rows_loader(config, train_data)
    if stock_model and config["stock_length_bucketing"] and not isinstance(train_data, WholeSequenceRowsLoader):
        train_data = _stock_prefix_loader(config, train_data)
    wants_plugin_loader = config["train_whole_sequence"] or config["length_bucketing"]
    if wants_plugin_loader:
        if getattr(model_class, "supports_whole_sequence", False):
            train_data = SequenceTrainDataLoader(
                config, train_data._dataset, shuffle=config["shuffle"],
                whole_sequences=bool(config["train_whole_sequence"]),
            )
        elif not isinstance(train_data, SequenceTrainDataLoader):  # not already a plugin loader
            getLogger().info(
                f"train_whole_sequence / length_bucketing are ignored for {config['model']}: "
                f"it trains on RecBole's prefix samples"
            )
    if config["sort_eval_by_length"] and getattr(model_class, "supports_whole_sequence", False):
        for loader in (valid_data, test_data):
            sort_by_history_length(loader._dataset)
    return train_data, valid_data, test_data


# Stock RecBole models whose output at position t depends only on the items up to t, each with an
# all-position adapter in recbole_mm.model.stock_whole_sequence (``stock_whole_sequence``)
STOCK_WHOLE_SEQUENCE_MODELS = ("SASRec", "SASRecF", "FDSA", "GRU4Rec", "GRU4RecF", "S3Rec")
# Why some other stock sequential models cannot be served (their output at t sees later items)
NOT_CAUSAL_REASONS = {
    "BERT4Rec": "its attention is bidirectional (position t sees later items)",
    "NARM": "its attention reads the whole sequence, queried by the last hidden state",
    "STAMP": "it reads the mean of the whole sequence and its last item",
    "Caser": "its convolutions read the fixed window of the last MAX_ITEM_LIST_LENGTH items",
    "SRGNN": "its session graph is built from the whole sequence",
    "GCSAN": "its session graph is built from the whole sequence",
    "LightSANs": "its low-rank item pooling mixes all positions",
    "CORE": "it pools the whole sequence",
}


def stock_whole_sequence_refusal(config) -> Optional[str]:
    """Why ``stock_whole_sequence`` cannot serve this run's model and stage (None: it can).
    Served: the causal models of :data:`STOCK_WHOLE_SEQUENCE_MODELS` with loss_type CE and no
    batch transform, S3Rec in its fine-tuning stage only."""
    name = config["model"]
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return "it is not a sequential model"
    if name in NOT_CAUSAL_REASONS:
        return NOT_CAUSAL_REASONS[name]
    if name not in STOCK_WHOLE_SEQUENCE_MODELS:
        return f"it is not among the models checked to be causal {STOCK_WHOLE_SEQUENCE_MODELS}"
    if name == "S3Rec" and config["train_stage"] != "finetune":
        return "S3Rec's pre-training builds its own samples (use stock_whole_sequence_rows)"
    negatives = config["train_neg_sample_args"] or {}
    if config["loss_type"] != "CE" or negatives.get("distribution", "none") != "none":
        return ("loss_type BPR samples one random negative per prefix sample, which a whole-sequence pass "
                "cannot reproduce exactly: use loss_type CE")
    if config["transform"]:
        return f"its batches need the transform {config['transform']!r}"
    if config["stock_whole_sequence_rows"]:
        return "stock_whole_sequence_rows is on too (one of the two)"
    return None


def uses_stock_whole_sequence(config, model_class) -> bool:
    """Whether the run trains a stock model on whole sequences (``stock_whole_sequence``); a model
    it cannot serve is a :class:`ConfigError` naming the model and the reason. The plugin's own
    models ignore the key (``train_whole_sequence`` is theirs)."""
    if not config["stock_whole_sequence"] or hasattr(model_class, "supports_whole_sequence"):
        return False
    reason = stock_whole_sequence_refusal(config)
    if reason:
        raise ConfigError(f"stock_whole_sequence: {config['model']} cannot train on whole sequences: {reason}")
    return True


# Stock RecBole training stages that build their own samples from a whole sequence
CLOZE_TRANSFORMS = ("mask_itemseq",)


def builds_own_samples(config) -> bool:
    """Whether a stock training stage makes its samples from a user's whole sequence: S3Rec's
    pre-training and cloze models (RecBole transform ``mask_itemseq``: BERT4Rec). One row per
    user is then their paper's input; other models need RecBole's (history, next item) rows."""
    return config["train_stage"] == "pretrain" or config["transform"] in CLOZE_TRANSFORMS


def _stock_whole_rows_loader(config, train_data):
    """``stock_whole_sequence_rows``: one row per user sequence for the stock stages that build
    their own samples; the others keep RecBole's loader."""
    if not builds_own_samples(config):
        getLogger().info(
            f"stock_whole_sequence_rows is ignored for {config['model']}: it trains on (history, next item) "
            f"prefix rows (the key is for S3Rec pre-training and cloze models such as BERT4Rec)"
        )
        return train_data
    getLogger().info(f"{config['model']}: one training row per user sequence (stock_whole_sequence_rows)")
    return WholeSequenceRowsLoader(config, train_data._dataset, shuffle=config["shuffle"])


# Stock RecBole sequential models whose outputs do not depend on trailing padding (causal or
# padding-masked encoders, last-position readout) and whose training batches need no transform
LENGTH_AGNOSTIC_STOCK_MODELS = ("SASRec", "GRU4Rec", "FDSA", "S3Rec", "NARM", "STAMP", "SRGNN", "GCSAN")


def _stock_prefix_loader(config, train_data):
    """``stock_length_bucketing``: the same prefix samples in length-bucketed, trimmed batches,
    for the stock models known to be exact under trimming; the others keep RecBole's loader."""
    name = config["model"]
    reasons = []
    if name not in LENGTH_AGNOSTIC_STOCK_MODELS:
        reasons.append(f"{name} is not in the models known to be exact under trimming {LENGTH_AGNOSTIC_STOCK_MODELS}")
    negatives = config["train_neg_sample_args"] or {}
    if negatives.get("distribution", "none") != "none":
        reasons.append("it samples negatives (loss_type BPR): use loss_type CE")
    if config["transform"]:
        reasons.append(f"its batches need the transform {config['transform']!r}")
    if name == "S3Rec" and config["train_stage"] == "pretrain":
        reasons.append("S3Rec's pre-training builds its own samples")
    if reasons:
        getLogger().info(f"stock_length_bucketing is ignored for {name}: " + "; ".join(reasons))
        return train_data
    getLogger().info(f"{name}: RecBole's prefix samples in length-bucketed, trimmed batches (stock_length_bucketing)")
    return PrefixTrainDataLoader(config, train_data._dataset, shuffle=config["shuffle"])


def sort_by_history_length(dataset) -> None:
    """Order an evaluation data set's rows by history length, so that trimmed batches hold
    little padding. Metrics are means over users, so the order does not change them."""
    inter = dataset.inter_feat
    order = torch.argsort(inter[dataset.item_list_length_field], stable=True)
    dataset.inter_feat = inter[order]
