"""The run pipeline, written once: Config -> data set -> loaders -> model -> trainer -> results.

:func:`build_pipeline` builds every part for every kind of run — training (plugin and stock
models), multi-domain pre-training (``stage: pretrain``), multi-task and adversarial models,
the benchmarks — and :func:`run_single` trains and evaluates what it built. Built from
RecBole's parts; RecBole's quick-start module is never imported (it pulls in ray).
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from logging import getLogger
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from recbole.utils import get_local_time, init_logger, init_seed, set_color

from recbole_mm.checkpoint import (
    CheckpointError,
    auto_race_settings,
    check_resume_settings,
    check_checkpoint_files,
    load_auto_race_state,
    load_resume_state,
    new_run_id,
    resume_settings,
    resume_state_file,
    rng_states,
    save_auto_race_state,
    set_rng_states,
)
from recbole_mm.config import (
    ADAPTATION_MODES,
    AUTO_STRATEGIES,
    ConfigError,
    MMConfig,
    adaptation_mode,
    check_choice,
    global_rank,
)
from recbole_mm.curves import plot_training_curve
from recbole_mm.data.multidomain import domain_names
from recbole_mm.data.utils import create_dataset, ensure_embedded_datasets, prepare_data
from recbole_mm.fileio import release_lock, try_lock, write_json_atomic
from recbole_mm.model.transferable import Transferable, apply_adaptation
from recbole_mm.utils import get_model, get_trainer, quiet_known_warnings


def setup_logging(config) -> str:
    """RecBole's logger set-up, safe to call once per run in one process; returns the log file,
    ``log/<Model>/<Model>-<dataset>-<time>-<run id>.log`` (the results JSON, curve and TensorBoard
    folder are named after it, so no two runs share them)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_recbole_mm", False):
            root.removeHandler(handler)
            handler.close()
    before = set(root.handlers)
    init_logger(config)
    added = [h for h in root.handlers if h not in before]
    recbole_file = next((h for h in added if isinstance(h, logging.FileHandler)), None)
    file_handler = _run_log_handler(config, recbole_file)
    if recbole_file is not None:  # RecBole's file name says the second, not the run: ours replaces it
        added.remove(recbole_file)
        _drop_handler(recbole_file)
    else:  # root already had handlers (e.g. under pytest)
        root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    for handler in added + [file_handler]:
        handler._recbole_mm = True
    return file_handler.baseFilename


def _run_log_handler(config, like: Optional[logging.FileHandler]) -> logging.FileHandler:
    """The run's log file handler (level, format and filters of RecBole's ``like`` where given)."""
    log_dir = os.path.join("log", config["model"])
    os.makedirs(log_dir, exist_ok=True)
    run_id = config["run_id"] or new_run_id()
    handler = logging.FileHandler(os.path.join(log_dir, f"{config['model']}-{config['dataset']}-{get_local_time()}-"
                                                        f"{run_id}.log"))
    if like is None:
        handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s"))
        return handler
    handler.setFormatter(like.formatter)
    handler.setLevel(like.level)
    for log_filter in like.filters:
        handler.addFilter(log_filter)
    return handler


def _drop_handler(handler: logging.FileHandler) -> None:
    """Remove a file handler from the root logger and its (still empty) file."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    if os.path.isfile(handler.baseFilename) and os.path.getsize(handler.baseFilename) == 0:
        os.remove(handler.baseFilename)


def device_name(device) -> str:
    """The device a run really uses: ``cpu``, or ``cuda:<index> (<GPU name>)``."""
    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _plain(result) -> Dict[str, float]:
    return {k: float(v) for k, v in (result or {}).items()}


def run(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    read_command_line: bool = False,
    nproc: int = 1,
    port: int = 29533,
    world_size: Optional[int] = None,
    ip: str = "127.0.0.1",
    group_offset: int = 0,
) -> dict:
    """Train and evaluate; with more than one process through RecBole's torch.distributed path
    (gloo on CPU, NCCL on GPUs). ``nproc`` processes on this machine; several machines (RecBole's
    multi-node arguments): each starts ``nproc`` processes with the same ``world_size`` (all
    processes of all machines), ``ip`` and ``port`` (machine 0's rendezvous) and its own
    ``group_offset`` (the global rank of its first process). Returns this machine's first
    process's results (metrics are reduced over all processes); files are written by global rank 0."""
    world_size = nproc if world_size is None else world_size
    if nproc < 1:
        raise ConfigError(f"nproc must be at least 1 (processes on this machine), got {nproc}")
    if group_offset < 0 or world_size < group_offset + nproc:
        raise ConfigError(f"world_size ({world_size}) must be at least group_offset ({group_offset}) + nproc "
                          f"({nproc}): every process of every machine has a global rank below world_size")
    if world_size == 1:
        return run_single(model, dataset, config_file_list, config_dict, saved, read_command_line)
    import torch.multiprocessing as mp

    dist_config = dict(config_dict or {})
    dist_config.update({"world_size": world_size, "nproc": nproc, "ip": ip, "port": str(port),
                        "offset": group_offset})
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.spawn(
        _run_rank,
        args=(model, dataset, config_file_list, dist_config, saved, read_command_line, queue),
        nprocs=nproc,
        join=True,
    )
    return queue.get()


def _run_rank(rank, model, dataset, config_file_list, config_dict, saved, read_command_line, queue):
    if read_command_line:  # started by the command line, which hides RecBole's known warnings
        quiet_known_warnings()
    result = run_single(model, dataset, config_file_list, {**config_dict, "local_rank": rank}, saved,
                        read_command_line)
    if rank == 0:
        queue.put(result)


@dataclass
class Pipeline:
    """Everything one run is made of, built by :func:`build_pipeline`."""

    config: MMConfig
    dataset: object
    train_data: object
    valid_data: Optional[object]
    test_data: Optional[object]
    model: torch.nn.Module
    trainer: object
    adaptation: dict
    trained: bool = False  # training already ended (adaptation auto: early stopping ended the winner's probe)


def build_config(model: Optional[str] = None, dataset: Optional[str] = None,
                 config_file_list: Optional[List[str]] = None, config_dict: Optional[dict] = None,
                 read_command_line: bool = False) -> MMConfig:
    """The run's config (stage and adaptation checked before any data set loads)."""
    return MMConfig(model, dataset, config_file_list, config_dict, read_command_line=read_command_line)


def build_pipeline(config: MMConfig, logger: Optional[logging.Logger] = None) -> Pipeline:
    """Data set, loaders, model (adapted from a pre-trained checkpoint where asked) and trainer
    for ``config``: the one pipeline of every kind of run."""
    logger = logger or getLogger()
    check_checkpoint_files(config)  # before any data loads; stock S3Rec reads pre_model_path with a bare torch.load
    for name in ensure_embedded_datasets(config):  # the only step that writes data
        logger.info(f"embedded synthetic data set {name} written")
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = prepare_data(config, dataset)

    if adaptation_mode(config) == "auto":  # several models: run_single's successive halving builds them
        return Pipeline(config, dataset, train_data, valid_data, test_data, None, None, {"mode": "auto"})
    model, trainer, adaptation = build_model_and_trainer(config, train_data, logger)
    return Pipeline(config, dataset, train_data, valid_data, test_data, model, trainer, adaptation)


def build_model_and_trainer(config: MMConfig, train_data, logger: logging.Logger):
    """The model (seeded, adapted as config key ``adaptation`` says) and its trainer."""
    init_seed(config["seed"] + global_rank(config), config["reproducibility"])
    model_class = get_model(config["model"])
    if config["stage"] == "pretrain":
        if not issubclass(model_class, Transferable):
            raise TypeError(f"model {config['model']} is not transferable (recbole_mm.model.transferable."
                            f"Transferable): stage pretrain needs ANT, UniSRec or PMMRec (docs/transfer.md)")
        if not config["single_spec"]:
            raise NotImplementedError("stage pretrain runs in one process: drop --nproc")
    model = model_class(config, train_data._dataset).to(config["device"])  # files checked by build_pipeline
    logger.info(model)
    adaptation = apply_adaptation(model, config, logger) if config["stage"] != "pretrain" else {}
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config["stage"])(config, model)
    return model, trainer, adaptation


def run_single(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    read_command_line: bool = False,
) -> dict:
    """Train and evaluate one model on one data set in this process (or pre-train it on several
    domains with ``stage: pretrain``); returns (and writes as JSON) the results.

    The JSON lies next to the run's log file (``log/<Model>/<...>.json``) and holds the best
    validation result, the test result, the seconds of every training epoch and evaluation,
    the parameter count and the checkpoint path.
    """
    config = build_config(model, dataset, config_file_list, config_dict, read_command_line)
    config["run_id"] = new_run_id()  # in every file name of the run (a resumed run keeps its state's)
    init_seed(config["seed"], config["reproducibility"])
    log_file = setup_logging(config)
    logger = getLogger()
    logger.info(config)
    for warning in config.ignored_settings:
        logger.warning(warning)
    logger.info(set_color("device", "yellow") + f": {device_name(config['device'])}")
    if config["stage"] == "pretrain":
        settings = resume_settings(config, domain_names(config["dataset"]))
        resume = load_resume_state(config["resume_from"], settings) if config["resume_from"] else None
        return _write_result(_pretrain(build_pipeline(config, logger), settings, resume, log_file), config, log_file)
    pipe = build_pipeline(config, logger)
    if pipe.adaptation["mode"] == "auto":
        pipe = _choose_adaptation(pipe, saved, logger)
    return _write_result(_train_and_evaluate(pipe, saved, log_file), config, log_file)


def _choose_adaptation(pipe: Pipeline, saved: bool, logger: logging.Logger) -> Pipeline:
    """``adaptation: auto``: a race of the ``auto_candidates`` on the validation metric
    (docs/transfer.md); ``auto_strategy`` says how.

    Every candidate gets its own model, built and adapted exactly as a run of that mode, its own
    trainer, RNG state and batch order, so each candidate's epochs are those of its own run.
    Ground-built trains to its early stop (it is the baseline a transfer mode must beat). The
    transfer candidates first train ``auto_probe_epochs`` epochs each; then only the best of them
    (by best validation score) trains on, until it stops early or all transfer epochs together
    (the probes included) reach ``auto_budget`` x ground-built's epochs. The candidate with the best
    validation score wins; its best checkpoint is evaluated. Short probes favour modes that start
    high (fine-tune), so ground-built is never dropped: a transfer mode is chosen only where its
    validation score beats ground-built's own final one. That is ``auto_strategy: guarded``;
    ``commit`` probes every candidate, ground-built included, ``auto_probe_epochs`` epochs and
    trains only the best of them on, to its own early stop (about the cost of one run, no guard).

    Resumable: each candidate writes its ``-<mode>-last.pth`` state after every epoch, the race its
    settings and the candidates' files as ``<run>-last.pth``; ``resume_from`` = that file drives the
    race again, the epochs a candidate's state holds replayed from its validation history, the
    rest trained.
    """
    config = pipe.config
    if not config["pretrained_checkpoint"]:
        raise ValueError("adaptation auto needs config key `pretrained_checkpoint` (the modes it chooses among "
                         "start from it)")
    candidates = list(config["auto_candidates"] or ADAPTATION_MODES)
    for mode in candidates:
        check_choice("auto_candidates", mode, ADAPTATION_MODES)
    strategy = config["auto_strategy"] or "guarded"
    check_choice("auto_strategy", strategy, AUTO_STRATEGIES)
    probe_epochs, budget = int(config["auto_probe_epochs"]), float(config["auto_budget"])
    check_auto_race_settings(probe_epochs, budget)
    sign = 1.0 if config["valid_metric_bigger"] else -1.0
    settings = {**auto_race_settings(config), "auto_strategy": strategy, "auto_candidates": candidates}
    race = load_auto_race_state(config["resume_from"], settings) if config["resume_from"] else None
    runs, stem = {}, None
    for mode in candidates:
        config["adaptation"] = mode
        model, trainer, summary = build_model_and_trainer(config, pipe.train_data, logger)
        if stem is None:
            stem, ext = os.path.splitext(trainer.saved_model_file)
        trainer.saved_model_file = f"{stem}-{mode}{ext}"  # the candidates' best models side by side
        runs[mode] = {"model": model, "trainer": trainer, "summary": summary, "rng": rng_states(), "epochs": 0,
                      "stopped": False, "recorded": 0}
        if race is not None:  # continue the interrupted race's files; a candidate's epochs so far are replayed
            trainer.saved_model_file, trainer.run_id = race["candidates"][mode], race["run_id"]
            if os.path.isfile(trainer.resume_file):
                trainer.resume_checkpoint(trainer.resume_file)
                runs[mode]["recorded"] = _check_replayable(trainer, trainer.resume_file)
    race_file = config["resume_from"] or f"{stem}-last.pth"  # where a run's resume state lies: the race's
    if saved and race is None and global_rank(config) == 0:
        save_auto_race_state(race_file, config["run_id"], settings,
                             {m: r["trainer"].saved_model_file for m, r in runs.items()})
    if saved:
        logger.info(f"race state: {race_file}, each candidate's after every evaluation beside it (resume with "
                    f"--resume_from=<it>)")

    def train_one_epoch(mode: str) -> None:
        run, trainer = runs[mode], runs[mode]["trainer"]
        if run["epochs"] < run["recorded"]:  # an epoch of the interrupted race: its outcome is in the state
            run["epochs"] += 1
            run["stopped"] = recorded_stop(trainer, run["epochs"], sign) or run["epochs"] >= config["epochs"]
            return
        set_rng_states(run["rng"])
        pipe.train_data.begin_epoch(run["epochs"])
        trainer.start_epoch, trainer.epochs = run["epochs"], run["epochs"] + 1
        trainer.fit(pipe.train_data, pipe.valid_data, saved=saved, show_progress=config["show_progress"],
                    callback_fn=trainer.save_resume_state if saved else None)
        run["rng"], run["epochs"] = rng_states(), run["epochs"] + 1
        run["stopped"] = stopped_early(trainer) or run["epochs"] >= config["epochs"]

    def score(mode: str) -> float:
        run = runs[mode]
        if run["epochs"] < run["recorded"]:
            return recorded_best(run["trainer"], run["epochs"], sign)
        return sign * float(run["trainer"].best_valid_score)

    with ExitStack() as locks:  # the race's files and every candidate's: no other process may write them meanwhile
        for path in [race_file] + [r["trainer"].saved_model_file for r in runs.values()]:
            locks.enter_context(run_lock(path, config["run_id"], config, enabled=saved))
        if strategy == "commit":
            probe_then_commit(runs, candidates, probe_epochs, train_one_epoch, score, sign, logger)
        else:
            guarded_race(runs, candidates, probe_epochs, budget, train_one_epoch, score, sign, logger)
    ahead = [m for m, r in runs.items() if r["epochs"] < r["recorded"]]
    if ahead:  # cannot happen with the race's own states; a state from elsewhere would be tested as if it were
        raise CheckpointError(f"cannot resume adaptation auto from {config['resume_from']}: the states of {ahead} "
                              f"hold more epochs than the race gives them")
    winner = max(candidates, key=score)
    rounds = {m: {"epochs": runs[m]["epochs"], "best_valid_score": score(m) * sign,
                  "stopped_early": stopped_early(runs[m]["trainer"])} for m in candidates}
    logger.info(set_color("adaptation auto", "yellow") + f": {winner} wins ({config['valid_metric']} "
                + ", ".join(f"{m} {r['best_valid_score']:.4f} after {r['epochs']} epochs" for m, r in rounds.items())
                + ")")
    config["adaptation"] = winner
    other_seconds = sum(sum(r["trainer"].train_epoch_seconds) + sum(getattr(r["trainer"], "eval_seconds", []))
                        for m, r in runs.items() if m != winner)
    adaptation = {**runs[winner]["summary"], "mode": winner, "auto": {
        "strategy": strategy, "candidates": candidates, "probe_epochs": probe_epochs, "budget": budget,
        "valid_metric": config["valid_metric"], "candidates_run": rounds, "winner": winner,
        "other_candidates_seconds": other_seconds, "epochs_all_candidates": sum(r["epochs"] for r in runs.values()),
        "resumed_at_epoch": {m: r["recorded"] for m, r in runs.items()} if race is not None else None}}
    return Pipeline(config, pipe.dataset, pipe.train_data, pipe.valid_data, pipe.test_data, runs[winner]["model"],
                    runs[winner]["trainer"], adaptation, trained=True)


def _check_replayable(trainer, path: str) -> int:
    """The epochs a resumed candidate's state holds; ``CheckpointError`` unless its validation
    history reaches its last epoch (the race's replay reads its scores from there)."""
    history = getattr(trainer, "valid_history", None) or []
    if trainer.start_epoch and (not history or history[-1].get("epoch") != trainer.start_epoch - 1):
        raise CheckpointError(f"cannot resume adaptation auto from {path}: its `valid_history` does not reach its "
                              f"epoch {trainer.start_epoch - 1}, so the race cannot be replayed")
    return trainer.start_epoch


def best_by_early_stopping(scores: Iterable[Tuple[int, float]], epochs: int) -> Tuple[float, Optional[int], int]:
    """(best score, the epoch it came at, evaluations since it) among ``(epoch, signed score)``
    validations of the epochs before ``epochs``, by RecBole's early-stopping rule: a score equal to
    the best replaces it, NaN never does. Used to replay recorded epochs (a resumed auto race, and
    :mod:`recbole_mm.bench.auto_replay`)."""
    best, at, since = -math.inf, None, 0
    for epoch, value in scores:
        if epoch >= epochs:
            break
        if value >= best:
            best, at, since = value, epoch, 0
        else:
            since += 1
    return best, at, since


def _recorded_scores(trainer, sign: float) -> Iterable[Tuple[int, float]]:
    """``(epoch, signed score)`` of a resumed trainer's recorded validations."""
    return ((entry["epoch"], sign * float(entry["score"])) for entry in trainer.valid_history)


def recorded_best(trainer, epochs: int, sign: float) -> float:
    """The best signed validation score a resumed trainer had after ``epochs`` epochs."""
    return best_by_early_stopping(_recorded_scores(trainer, sign), epochs)[0]


def recorded_stop(trainer, epochs: int, sign: float) -> bool:
    """Whether early stopping had ended a resumed trainer's run after ``epochs`` epochs."""
    return best_by_early_stopping(_recorded_scores(trainer, sign), epochs)[2] > trainer.stopping_step


def stopped_early(trainer) -> bool:
    """Whether RecBole's early stopping ended (or would now end) the trainer's run: more evaluations
    without improvement than ``stopping_step``. Trainers without early stopping: False."""
    return bool(getattr(trainer, "cur_step", 0) > getattr(trainer, "stopping_step", math.inf))


def check_auto_race_settings(probe_epochs: int, budget: float) -> None:
    """``ValueError`` naming the config keys unless ``auto_probe_epochs`` >= 1 and ``auto_budget`` >= 0."""
    if probe_epochs < 1 or budget < 0:
        raise ValueError(f"config keys `auto_probe_epochs` (>= 1) and `auto_budget` (>= 0): got {probe_epochs}, "
                         f"{budget}")


def probe_then_commit(runs: dict, candidates: List[str], probe_epochs: int, train_one_epoch: Callable,
                       score: Callable, sign: float, logger: logging.Logger) -> None:
    """``auto_strategy: commit``: every candidate ``probe_epochs`` epochs, then the leader to its end."""
    for mode in candidates:
        while runs[mode]["epochs"] < probe_epochs and not runs[mode]["stopped"]:
            train_one_epoch(mode)
    leader = max(candidates, key=score)
    logger.info(set_color("adaptation auto", "yellow") + f": after {probe_epochs} probe epochs "
                + ", ".join(f"{m} {score(m) * sign:.4f}" for m in candidates) + f"; {leader} trains on alone")
    while not runs[leader]["stopped"]:
        train_one_epoch(leader)


def guarded_race(runs: dict, candidates: List[str], probe_epochs: int, budget: float, train_one_epoch: Callable,
                  score: Callable, sign: float, logger: logging.Logger) -> None:
    """``auto_strategy: guarded``: ground-built to its end; the transfer modes probed, the best of
    them on within ``budget`` x ground-built's epochs."""
    baseline = "ground_built" if "ground_built" in runs else candidates[0]
    transfer = [m for m in candidates if m != baseline]
    leader = None
    while True:
        progressed = False
        if not runs[baseline]["stopped"]:
            train_one_epoch(baseline)
            progressed = True
        racing = [m for m in transfer if not runs[m]["stopped"]]
        if leader is None and all(runs[m]["epochs"] >= probe_epochs or runs[m]["stopped"] for m in transfer):
            leader = max(transfer, key=score) if transfer else None
            logger.info(set_color("adaptation auto", "yellow") + f": after {probe_epochs} probe epochs "
                        + ", ".join(f"{m} {score(m) * sign:.4f}" for m in candidates) + f"; {leader} trains on")
        if leader is not None:
            racing = [leader] if leader in racing else []
        # every transfer epoch (the probes too) counts against the budget, which grows with ground-built's
        allowance = max(probe_epochs * len(transfer), budget * runs[baseline]["epochs"])
        for mode in racing:
            if runs[mode]["epochs"] < probe_epochs or sum(runs[m]["epochs"] for m in transfer) < allowance:
                train_one_epoch(mode)
                progressed = True
        if not progressed:
            break


def _train_and_evaluate(pipe: Pipeline, saved: bool, log_file: str) -> dict:
    config, trainer, logger = pipe.config, pipe.trainer, getLogger()
    if not config["single_spec"]:  # every rank must name rank 0's checkpoint and run id
        names = [trainer.saved_model_file, getattr(trainer, "run_id", None)]
        torch.distributed.broadcast_object_list(names, src=0)
        trainer.saved_model_file, trainer.run_id = names

    callback = None
    if saved and hasattr(trainer, "save_resume_state"):
        if config["resume_from"] and not pipe.trained:  # an auto run resumed its race instead
            trainer.resume_checkpoint(config["resume_from"])  # continues that run: its id and files
        callback = trainer.save_resume_state
        if not pipe.trained:  # an auto run named its race state instead
            logger.info(f"state after every evaluation: {trainer.resume_file} (resume with --resume_from=<it>)")
    with run_lock(trainer.saved_model_file, getattr(trainer, "run_id", config["run_id"]), config, enabled=saved):
        if pipe.trained:
            best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
        else:
            best_valid_score, best_valid_result = trainer.fit(
                pipe.train_data, pipe.valid_data, saved=saved, show_progress=config["show_progress"],
                callback_fn=callback,
            )
        if config["train_stage"] == "pretrain" and hasattr(trainer, "pretrain"):
            # a stock RecBole pre-training stage (S3Rec): nothing to evaluate yet
            return _stock_pretrain_result(trainer, config, log_file, logger)
        test_result = trainer.evaluate(pipe.test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    epoch_seconds = getattr(trainer, "train_epoch_seconds", [])
    resumed_at = None
    if config["resume_from"]:  # an auto run: where its winner's epochs were resumed (the others' are in `adaptation`)
        race = (pipe.adaptation or {}).get("auto")
        resumed_at = race["resumed_at_epoch"][config["adaptation"]] if race else trainer.start_epoch
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "run_id": getattr(trainer, "run_id", config["run_id"]),  # a resumed run: the id of the run it continues
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "test_rows": len(pipe.test_data._dataset) if pipe.test_data is not None else None,  # users, for sequential data
        "epochs_trained": len(epoch_seconds),  # all epochs of the run, also those before a resume
        "epochs_limit": config["epochs"],
        # how training ended: by early stopping, else at epochs_limit or cut short (a resume with fewer epochs)
        "stopped_early": stopped_early(trainer),
        "resumed_at_epoch": resumed_at,
        "train_epoch_seconds": epoch_seconds,
        "eval_seconds": getattr(trainer, "eval_seconds", []),
        "train_loss_history": getattr(trainer, "train_loss_history", []),  # per epoch, as logged
        "valid_history": getattr(trainer, "valid_history", []),  # per evaluation: epoch, score, result
        "valid_metric_bigger": bool(config["valid_metric_bigger"]),
        "parameters": sum(p.numel() for p in pipe.model.parameters() if p.requires_grad),
        "checkpoint": trainer.saved_model_file if saved else None,
        "log_file": log_file,
        "tensorboard_dir": getattr(getattr(trainer, "tensorboard", None), "log_dir", None),
        "device": device_name(config["device"]),
        "settings": run_settings(config),
        "adaptation": pipe.adaptation,
    }


def _pretrain(pipe: Pipeline, settings: Dict, resume: Optional[dict], log_file: str) -> dict:
    """Multi-domain pre-training (docs/transfer.md): the transferable checkpoint and the resume
    state are rewritten after every epoch; a resume state continues the interrupted run."""
    config, trainer, multi, logger = pipe.config, pipe.trainer, pipe.dataset, getLogger()
    names = multi.names
    metadata = {"domains": names, "n_items": multi.domain_items}
    settings.update(n_items=multi.domain_items, feature_dims=pipe.model.transfer_metadata()["feature_dims"])
    history: List[dict] = []
    if resume is not None:  # keep writing the interrupted run's checkpoint
        check_resume_settings(resume, settings, config["resume_from"])
        history = trainer.restore_pretrain_state(resume, config["resume_from"])
        checkpoint = resume["checkpoint"]
    else:
        checkpoint = os.path.join(config["checkpoint_dir"], f"{config['model']}-pretrain-{'+'.join(names)}-"
                                                            f"{get_local_time()}-{config['run_id']}.pth")
    logger.info(f"state after every epoch: {resume_state_file(checkpoint)} (resume with --resume_from=<it>)")
    with run_lock(checkpoint, config["run_id"], config):
        history = trainer.pretrain(pipe.train_data, checkpoint, metadata, show_progress=config["show_progress"],
                                   history=history, settings=settings)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "stage": "pretrain",
        "domains": names,
        "n_items": multi.domain_items,
        "pretrain_loss": history,
        "epochs_trained": max(0, len(history) - trainer.start_epoch),  # in this run (as stage train counts)
        "epochs": len(history),
        "resumed_from": config["resume_from"] or None,
        "train_epoch_seconds": getattr(trainer, "train_epoch_seconds", []),
        "train_loss_history": [record["total"] for record in history],  # the curve: mean loss per epoch
        "parameters": sum(p.numel() for p in pipe.model.parameters() if p.requires_grad),
        "checkpoint": checkpoint if history else None,
        "resume_state": resume_state_file(checkpoint) if history else None,
        "log_file": log_file,
        "device": device_name(config["device"]),
        "settings": run_settings(config),
    }


@contextmanager
def run_lock(checkpoint_file: str, run_id: str, config, enabled: bool = True):
    """While a run trains, it holds ``<checkpoint>.lock`` (rank 0): a second process that would
    write the same files (a resume of a run that is still going) is refused."""
    if not enabled or global_rank(config) != 0:
        yield
        return
    lock_file = os.path.splitext(checkpoint_file)[0] + ".lock"
    fd = try_lock(lock_file)
    if fd is None:
        raise ValueError(f"{lock_file} is held: run {run_id} is going on in another process, which writes "
                         f"{checkpoint_file}; resume it once that process has ended")
    try:
        yield
    finally:
        release_lock(lock_file, fd)


def _stock_pretrain_result(trainer, config, log_file: str, logger) -> dict:
    """Result of a stock pre-training stage: the pre-trained file for ``pre_model_path``."""
    path = trainer.saved_model_file
    if not os.path.isfile(path):
        raise ValueError(
            f"{config['model']} pre-training saved nothing: `pretrain_epochs` ({config['pretrain_epochs']}) "
            f"must be at least `save_step` ({config['save_step']})"
        )
    logger.info(f"pre-trained model: {path} (fine-tune with --train_stage=finetune --pre_model_path={path})")
    seconds = getattr(trainer, "train_epoch_seconds", [])
    result = {"model": config["model"], "dataset": config["dataset"], "stage": "pretrain",
              "pretrained_model": path, "epochs_trained": len(seconds), "train_epoch_seconds": seconds,
              "log_file": log_file, "device": device_name(config["device"])}
    return _write_result(result, config, log_file)


# keys of a run's settings that say where things go or how the run is shown, not what it is
UNREPORTED_SETTINGS = {"model", "dataset", "config_files", "data_path", "checkpoint_dir", "resume_from", "show_progress",
                       "state", "log_tensorboard", "nproc", "world_size", "ip", "port", "offset", "local_rank",
                       "gpu_id", "use_gpu", "strict_config_keys"}


def run_settings(config) -> Dict[str, object]:
    """The settings this run was given (config files, config dict, command line; not the
    defaults), without those that only say where files go or how the run is shown: what tells
    runs apart in ``python -m recbole_mm.bench.report``."""
    return {key: value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)
            for key, value in sorted(config.external_config_dict.items()) if key not in UNREPORTED_SETTINGS}


def _write_result(result: dict, config, log_file: str) -> dict:
    """Write the results JSON beside the log and the training curve beside it as a PNG (rank 0),
    and leave the process group."""
    if global_rank(config) == 0:
        result["results_file"] = os.path.splitext(log_file)[0] + ".json"
        if result.get("train_loss_history") or result.get("valid_history"):
            result["curve_file"] = plot_training_curve(result, os.path.splitext(log_file)[0] + ".png")
        write_json_atomic(result["results_file"], result)
    if not config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return result
