"""The run pipeline: Config -> data set -> loaders -> model -> trainer -> results.

Built from RecBole's parts; RecBole's quick-start module is never imported (it pulls in ray).
"""

from __future__ import annotations

import hashlib
import logging
import os
from logging import getLogger
from typing import Dict, List, Optional

import torch
from recbole.utils import get_local_time, init_logger, init_seed, set_color

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.fileio import write_json_atomic
from recbole_mm.trainer.trainer import trusted_torch_load
from recbole_mm.transfer import apply_adaptation, check_stage_keys
from recbole_mm.utils import get_model, get_trainer


def setup_logging(config) -> str:
    """RecBole's logger set-up, safe to call once per run in one process; returns the log file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_recbole_mm", False):
            root.removeHandler(handler)
            handler.close()
    before = set(root.handlers)
    init_logger(config)
    added = [h for h in root.handlers if h not in before]
    file_handler = next((h for h in added if isinstance(h, logging.FileHandler)), None)
    if file_handler is None:  # root already had handlers (e.g. under pytest): add ours
        digest = hashlib.md5(str(config.final_config_dict).encode("utf-8")).hexdigest()[:6]
        log_dir = os.path.join("log", config["model"])
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, f"{config['model']}-{config['dataset']}-{get_local_time()}-{digest}.log")
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s"))
        root.addHandler(file_handler)
        root.setLevel(logging.INFO)
        added.append(file_handler)
    for handler in added:
        handler._recbole_mm = True
    return file_handler.baseFilename


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
) -> dict:
    """Train and evaluate; with ``nproc`` > 1 through RecBole's torch.distributed path
    (``nproc`` processes on this machine: gloo on CPU, NCCL on GPUs). Returns rank 0's results."""
    if nproc <= 1:
        return run_single(model, dataset, config_file_list, config_dict, saved, read_command_line)
    import torch.multiprocessing as mp

    dist_config = dict(config_dict or {})
    dist_config.update({"world_size": nproc, "nproc": nproc, "ip": "127.0.0.1", "port": str(port), "offset": 0})
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
    result = run_single(model, dataset, config_file_list, {**config_dict, "local_rank": rank}, saved,
                        read_command_line)
    if rank == 0:
        queue.put(result)


def run_single(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    read_command_line: bool = False,
) -> dict:
    """Train and evaluate one model on one data set in this process; returns (and writes as
    JSON) the results.

    The JSON lies next to the run's log file (``log/<Model>/<...>.json``) and holds the best
    validation result, the test result, the seconds of every training epoch and evaluation,
    the parameter count and the checkpoint path.
    """
    config = MMConfig(model, dataset, config_file_list, config_dict, read_command_line=read_command_line)
    check_stage_keys(config)  # before any data set loads
    init_seed(config["seed"], config["reproducibility"])
    log_file = setup_logging(config)
    logger = getLogger()
    logger.info(config)
    if config["stage"] == "pretrain":  # several domains, transferable checkpoint (docs/transfer.md)
        from recbole_mm.trainer.pretrain import run_pretrain

        return _write_result(run_pretrain(config, log_file), config, log_file)

    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = prepare_data(config, data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    with trusted_torch_load():  # stock S3Rec loads its pre-trained model with a bare torch.load
        model_obj = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    adaptation = apply_adaptation(model_obj, config, logger)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    if not config["single_spec"]:  # every rank must name rank 0's checkpoint (it embeds the start time)
        names = [trainer.saved_model_file]
        torch.distributed.broadcast_object_list(names, src=0)
        trainer.saved_model_file = names[0]

    callback = None
    if saved and hasattr(trainer, "save_resume_state"):
        if config["resume_from"]:
            trainer.resume_checkpoint(config["resume_from"])
        callback = trainer.save_resume_state
        logger.info(f"state after every evaluation: {trainer.resume_file} (resume with --resume_from=<it>)")
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback
    )
    if config["train_stage"] == "pretrain" and hasattr(trainer, "pretrain"):
        # a stock RecBole pre-training stage (S3Rec): nothing to evaluate yet
        return _stock_pretrain_result(trainer, config, log_file, logger)
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    epoch_seconds = getattr(trainer, "train_epoch_seconds", [])
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "epochs_trained": len(epoch_seconds),  # all epochs of the run, also those before a resume
        "resumed_at_epoch": trainer.start_epoch if config["resume_from"] else None,
        "train_epoch_seconds": epoch_seconds,
        "eval_seconds": getattr(trainer, "eval_seconds", []),
        "parameters": sum(p.numel() for p in model_obj.parameters() if p.requires_grad),
        "checkpoint": trainer.saved_model_file if saved else None,
        "log_file": log_file,
        "device": str(config["device"]),
        "adaptation": adaptation,
    }
    return _write_result(result, config, log_file)


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
              "log_file": log_file, "device": str(config["device"])}
    return _write_result(result, config, log_file)


def _write_result(result: dict, config, log_file: str) -> dict:
    """Write the results JSON beside the log (rank 0) and leave the process group."""
    if config["local_rank"] == 0:
        result["results_file"] = os.path.splitext(log_file)[0] + ".json"
        write_json_atomic(result["results_file"], result)
    if not config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return result
