"""Trainer additions that apply to every model run through the plugin, stock RecBole ones included.

- :class:`SafeCheckpointMixin`: the run's checkpoints (best model, resume state, a stock model's
  pre-trained file): named with its run id, written atomically as tensors and plain data (the Config
  as a dict) and read back with ``torch.load(weights_only=True)`` (a file passed in cannot run code);
  a resume state after every evaluation that continues the run exactly; a test score only from the
  model this run saved.
- :class:`HistoryMaskMixin`: with ``mask_history_items: True`` every item of the user's input
  sequence is removed from the full ranking (the ANT paper's protocol), vectorised.
- :class:`RunRecordMixin`: the epoch history (loss, validation score) for the results and the
  training curve, and RecBole's TensorBoard events switched by ``log_tensorboard``.
- :class:`BranchMetricsMixin`: with ``branch_metrics: True`` a model with
  ``branch_full_sort_predict`` (ODMT) also gets each branch's metrics in full-ranking evaluation
  (RecBole's Collector and Evaluator on each branch's scores), keys ``<metric>[<branch>]``.
- :class:`StockWholeSequenceMixin`: with ``stock_whole_sequence: True`` a stock causal model's
  training loss is computed on whole-sequence batches at every position
  (:mod:`recbole_mm.model.stock_whole_sequence`), not by its ``calculate_loss``.
- :class:`ModelParamGroupsMixin`: a model with ``optimizer_param_groups(config)`` gets its own
  parameter groups (learning rate and weight decay per group) in RecBole's optimiser.
- :func:`with_plugin_mixins`: puts them in front of any RecBole trainer class.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from functools import partial
from typing import Dict, Optional, Tuple

import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Collector
from recbole.trainer import Trainer
from recbole.utils import get_tensorboard
from torch.utils.tensorboard import SummaryWriter
from torch.nn.parallel import DistributedDataParallel

from recbole_mm.checkpoint import (
    CheckpointError,
    check_state_dict_shapes,
    check_training_resume,
    load_checkpoint,
    new_run_id,
    plain,
    plain_config,
    plain_other_parameter,
    rng_states,
    save_checkpoint,
    set_rng_states,
    training_resume_settings,
    with_run_id,
)
from recbole_mm.config import global_rank
from recbole_mm.data.utils import load_train_order_state, train_order_state, uses_stock_whole_sequence
from recbole_mm.model.stock_whole_sequence import whole_sequence_loss


def _file_stamp(path: str) -> Optional[Tuple[int, int, int]]:
    """(inode, modification time, size) of a file, None if it is missing: tells whether it was rewritten."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class SafeCheckpointMixin:
    """The run's checkpoints: ``<Model>-<time>-<run id>.pth`` (the best model) and its ``-last.pth``
    resume state, tensors and plain data written atomically, read with ``weights_only=True``."""

    def __init__(self, config, model):
        # RecBole's Trainer creates the folder with a check-then-create that races between the
        # processes of a distributed run on one machine
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)
        self.run_id = config["run_id"] or new_run_id()  # the runner gives every run its own
        self.saved_model_file = with_run_id(self.saved_model_file, self.run_id)
        self._best_model_stamp = None  # the best-model file as this run left it (_file_stamp)
        self._pending_resume = None  # RNG and batch-order states a resumed run restores as fit starts
        self._train_data = None

    def _model_state(self, epoch: int) -> dict:
        """What RecBole's checkpoints hold, as plain data (the Config as a dict)."""
        return {
            "config": plain_config(self.config),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": plain(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": plain_other_parameter(self.model),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best-model checkpoint, written atomically (a reader never sees half a file)."""
        if global_rank(self.config) != 0:  # one writer across all nodes
            return
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(self._model_state(epoch), target)
        if target == self.saved_model_file:
            self._best_model_stamp = _file_stamp(target)
        if verbose:
            self.logger.info(f"Saving current: {target}")

    def save_pretrained_model(self, epoch, saved_model_file):
        """A stock pre-training stage's file (RecBole's ``PretrainTrainer``, e.g. S3Rec's
        ``<Model>-<dataset>-<epoch>.pth``, with the run id added), in the plain format its
        fine-tuning stage reads with ``weights_only=True``."""
        target = with_run_id(saved_model_file, self.run_id)
        save_checkpoint(self._model_state(epoch), target)
        self.saved_model_file = target

    def _load_model_checkpoint(self, checkpoint_file: str) -> None:
        if not self.config["single_spec"] and torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 may still be writing the best checkpoint
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    def _check_own_best_model(self) -> None:
        """``ValueError`` when the best-model file is no longer the one this run wrote: its
        test score would be another model's."""
        if self._best_model_stamp is not None and _file_stamp(self.saved_model_file) != self._best_model_stamp:
            raise CheckpointError(f"{self.saved_model_file} was rewritten by another process after run {self.run_id} "
                                  f"saved its best model there: no test score is reported for a model this run did "
                                  f"not train")

    @property
    def resume_file(self) -> str:
        """Where :meth:`save_resume_state` writes: the best-model file with ``-last`` added."""
        return os.path.splitext(self.saved_model_file)[0] + "-last.pth"

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; a resumed run first restores the RNG and batch-order states it saved."""
        self._train_data = train_data
        if self._pending_resume is not None:
            self._restore_run_state(train_data)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                           callback_fn=callback_fn)

    def save_resume_state(self, epoch_idx: int, valid_score=None) -> None:
        """Write the state after an evaluated epoch (RecBole's ``fit`` callback), atomically.

        Unlike RecBole's best-model checkpoint it is written every evaluation, and it records
        the best result so far, the best model's file, the RNG states and the training loader's
        batch order, so a resumed run ends as the uninterrupted run would. What the plugin adds
        is plain data (``torch.load(weights_only=True)`` reads it)."""
        if global_rank(self.config) != 0:  # one writer across all nodes
            return
        state = {
            **self._model_state(epoch_idx),
            **plain({
                "best_valid_result": dict(self.best_valid_result) if self.best_valid_result else None,
                "best_model_file": self.saved_model_file,
                # timings so far: a resumed run reports every epoch, not only its own
                "train_epoch_seconds": list(getattr(self, "train_epoch_seconds", [])),
                "eval_seconds": list(getattr(self, "eval_seconds", [])),
                "train_loss_history": list(getattr(self, "train_loss_history", [])),
                "valid_history": list(getattr(self, "valid_history", [])),
            }),
            **self._run_state(),
        }
        save_checkpoint(state, self.resume_file)

    def _run_state(self) -> dict:
        """The run's id, the settings a resume must share, the RNG states and the training
        loader's batch order, all plain data."""
        return {
            "run_id": self.run_id,
            "settings": training_resume_settings(self.config),
            "rng": rng_states(),
            "train_order": train_order_state(self._train_data) if self._train_data is not None else None,
        }

    def resume_checkpoint(self, resume_file):
        """Continue the run of a ``-last.pth`` state (or a RecBole checkpoint) at the next epoch:
        its run id and files, its RNG states and batch order (restored as ``fit`` starts)."""
        checkpoint = load_checkpoint(resume_file, map_location=self.device, key="resume_from")
        self._check_resume_state(checkpoint, resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        if checkpoint.get("best_model_file"):
            self._continue_files_of(checkpoint, resume_file)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._load_extra_state(checkpoint)
        self.train_epoch_seconds = list(checkpoint.get("train_epoch_seconds", []))
        self.eval_seconds = list(checkpoint.get("eval_seconds", []))
        self.train_loss_history = list(checkpoint.get("train_loss_history", []))
        self.valid_history = list(checkpoint.get("valid_history", []))
        self._pending_resume = {"rng": checkpoint.get("rng"), "train_order": checkpoint.get("train_order"),
                                "file": resume_file}
        self.logger.info(f"Resumed run {self.run_id} from {resume_file}: training continues at epoch "
                         f"{self.start_epoch}")

    def _load_extra_state(self, checkpoint: dict) -> None:
        """What a subclass adds to :meth:`_model_state` beyond RecBole's keys, restored on resume."""

    def _check_resume_state(self, checkpoint, resume_file: str) -> None:
        """``ValueError`` unless ``checkpoint`` is a training state of this model, data set,
        architecture and of the settings the state would override."""
        pretrain = isinstance(checkpoint, dict) and str(checkpoint.get("format")).startswith("recbole_mm.pretrain")
        if pretrain or not isinstance(checkpoint, dict) or not {"state_dict", "epoch"} <= set(checkpoint):
            race = isinstance(checkpoint, dict) and str(checkpoint.get("format")).startswith("recbole_mm.auto_race")
            hint = (" (it is a pre-training state: resume it with --stage=pretrain)" if pretrain else
                    " (it is the race state of an adaptation auto run: resume it with --adaptation=auto)" if race else "")
            raise CheckpointError(f"config key `resume_from`: {resume_file} is not the state of a training run{hint}")
        saved = checkpoint.get("settings")
        if saved is None and checkpoint.get("config") is not None:  # a state written before the settings were
            saved = training_resume_settings(checkpoint["config"])
        check_training_resume(saved or {}, training_resume_settings(self.config), resume_file)
        check_state_dict_shapes(checkpoint["state_dict"], self.model.state_dict(), resume_file)

    def _continue_files_of(self, checkpoint: dict, resume_file: str) -> None:
        """Write the resumed run's files (its best model, its ``-last.pth``), under its run id."""
        best = checkpoint["best_model_file"]
        if checkpoint.get("best_valid_result") is not None and not os.path.isfile(best):
            raise CheckpointError(f"config key `resume_from`: {resume_file} names the best model file {best}, which is "
                                  f"missing (the resumed run could not report its test score)")
        self.saved_model_file = best
        self.run_id = checkpoint.get("run_id") or self.run_id
        self._best_model_stamp = _file_stamp(best)

    def _restore_run_state(self, train_data) -> None:
        pending, self._pending_resume = self._pending_resume, None
        if pending["train_order"] is not None:
            try:
                load_train_order_state(train_data, pending["train_order"])
            except ValueError as err:
                raise CheckpointError(f"cannot resume training from {pending['file']}: {err}") from None
        if pending["rng"] is not None:
            set_rng_states(pending["rng"])
        else:
            self.logger.warning("the resume state holds no RNG states (written by an older recbole_mm): the "
                                "resumed epochs will not repeat those of an uninterrupted run exactly")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            if model_file is None:
                self._check_own_best_model()
            self._load_model_checkpoint(model_file or self.saved_model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class HistoryMaskMixin:
    """Removes each user's input-sequence items from the full ranking when
    ``mask_history_items`` is set (for sequential data)."""

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        seq_field = self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]
        if self.config["mask_history_items"] and seq_field in interaction:
            history = interaction[seq_field].to(scores.device)
            scores.scatter_(1, history, float("-inf"))  # padding id 0 is already -inf
        return interaction, scores, positive_u, positive_i


class _BranchEvaluator:
    """Stands in for the trainer's RecBole ``Evaluator`` during one evaluation: the fused result,
    then each branch's, evaluated by the same ``Evaluator`` on its own ``Collector``'s data."""

    # what Collector.data_collect gathers from the training data once per fit (shared by the branches)
    DATA_KEYS = ("data.num_items", "data.num_users", "data.count_items", "data.count_users")

    def __init__(self, evaluator, source: Collector, branches: Dict[str, Collector]):
        self.evaluator, self.source, self.branches = evaluator, source, branches

    def __getattr__(self, name):
        if name == "evaluator":  # not yet set (copy, pickle)
            raise AttributeError(name)
        return getattr(self.evaluator, name)

    def evaluate(self, struct):
        result = self.evaluator.evaluate(struct)
        for branch, collector in self.branches.items():
            for key in self.DATA_KEYS:
                if key in self.source.data_struct:
                    collector.data_struct.set(key, self.source.data_struct.get(key))
            for metric, value in self.evaluator.evaluate(collector.get_data_struct()).items():
                result[f"{metric}[{branch}]"] = value
        return result


class BranchMetricsMixin:
    """``branch_metrics: True``: full-ranking evaluation of a model with
    ``branch_full_sort_predict(interaction) -> {branch: (B, n_items) scores}`` also reports each
    branch's metrics (the configured ``metrics`` and ``topk``), computed by RecBole's ``Collector``
    and ``Evaluator`` on the branch's scores with the same masking as the fused scores (padding,
    RecBole's history index, ``mask_history_items``). Keys: ``recall@10[text]`` etc.; the fused
    keys and so ``valid_metric`` are unchanged. Distributed runs reduce them with the others."""

    _branch_collectors: Optional[Dict[str, Collector]] = None

    def _reports_branches(self, eval_data) -> bool:
        return (bool(self.config["branch_metrics"]) and isinstance(eval_data, FullSortEvalDataLoader)
                and callable(getattr(self.model, "branch_full_sort_predict", None)))

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data or not self._reports_branches(eval_data):
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        evaluator, self._branch_collectors = self.evaluator, {}
        self.evaluator = _BranchEvaluator(evaluator, self.eval_collector, self._branch_collectors)
        try:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            self.evaluator, self._branch_collectors = evaluator, None

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self._branch_collectors is not None:
            masked = torch.isneginf(scores)  # every item the fused ranking excludes
            for branch, branch_scores in self.model.branch_full_sort_predict(interaction.to(self.device)).items():
                branch_scores = branch_scores.view(-1, self.tot_item_num).masked_fill(masked, float("-inf"))
                collector = self._branch_collectors.setdefault(branch, Collector(self.config))
                collector.eval_batch_collect(branch_scores, interaction, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i


class CPUDistributedMixin:
    """RecBole wraps the model in ``DistributedDataParallel(device_ids=[local_rank])``, which
    torch refuses for a CPU model; on CPU the wrapper is built without device ids (gloo)."""

    def __init__(self, config, model):
        cpu_distributed = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_distributed:
            config["single_spec"] = True  # keep RecBole from building its GPU-only wrapper
        try:
            super().__init__(config, model)
        finally:
            if cpu_distributed:
                config["single_spec"] = False
        if cpu_distributed:
            self.distributed_model = DistributedDataParallel(self.model)


class EpochTimerMixin:
    """Records the wall-clock seconds of every training epoch and evaluation pass."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        result = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.__dict__.setdefault("train_epoch_seconds", []).append(time.perf_counter() - start)
        return result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        start = time.perf_counter()
        result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        self.__dict__.setdefault("eval_seconds", []).append(time.perf_counter() - start)
        return result


class _NoTensorBoard:
    """Stands in for RecBole's ``SummaryWriter`` when ``log_tensorboard`` is False: writes nothing."""

    log_dir = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _run_tensorboard(logger):
    """RecBole's ``get_tensorboard``, naming the folder after this run's log file: the handler the
    runner marks (``_recbole_mm``) comes first, so that another file handler on the root logger (a
    test runner's) cannot give every run the same folder."""
    marked = [h for h in logging.getLogger().handlers if getattr(h, "_recbole_mm", False) and hasattr(h, "baseFilename")]
    if not marked:
        return get_tensorboard(logger)
    name = os.path.basename(marked[0].baseFilename).split(".")[0]
    return SummaryWriter(os.path.join("log_tensorboard", name))


@contextmanager
def _tensorboard_of_run(enabled: bool):
    """RecBole's ``Trainer.__init__`` opens a ``SummaryWriter`` (creating its folder) through its
    module's ``get_tensorboard``; during one trainer construction that gives the run's writer
    (:func:`_run_tensorboard`), or :class:`_NoTensorBoard` when ``log_tensorboard`` is False."""
    module = sys.modules[Trainer.__module__]
    original = module.get_tensorboard
    module.get_tensorboard = _run_tensorboard if enabled else (lambda logger: _NoTensorBoard())
    try:
        yield
    finally:
        module.get_tensorboard = original


def _loss_value(loss) -> float:
    return float(sum(loss)) if isinstance(loss, tuple) else float(loss)


class RunRecordMixin:
    """What a run leaves to look at:

    - ``train_loss_history`` (RecBole's epoch loss, as logged: the sum over the epoch's batches,
      loss parts added) and ``valid_history`` (``{"epoch", "score", "result"}`` per evaluation),
      kept in the results JSON and drawn as the training curve;
    - RecBole's TensorBoard events (``log_tensorboard/<log name>/``: train loss, valid score,
      hyper-parameters), or none with ``log_tensorboard: False``."""

    def __init__(self, config, model):
        with _tensorboard_of_run(config["log_tensorboard"] is not False):
            super().__init__(config, model)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.__dict__.setdefault("train_loss_history", []).append(_loss_value(loss))
        self._recorded_epoch = epoch_idx
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.__dict__.setdefault("valid_history", []).append({
            "epoch": getattr(self, "_recorded_epoch", None), "score": float(score),
            "result": {key: float(value) for key, value in (result or {}).items()}})
        return score, result


class ModelParamGroupsMixin:
    """RecBole builds the optimiser (``learner``, ``learning_rate``, ``weight_decay``) over all of
    ``model.parameters()``; a model that defines ``optimizer_param_groups(config) -> [dict]``
    (PMMRec: recommender and encoder groups; TAA / DAA: the target model without the critics)
    gets those groups instead. A caller that passes ``params`` itself is left alone."""

    def _build_optimizer(self, **kwargs) -> torch.optim.Optimizer:
        groups = getattr(self.model, "optimizer_param_groups", None)
        if "params" not in kwargs and callable(groups):
            kwargs["params"] = groups(self.config)
        return super()._build_optimizer(**kwargs)


class LearningRateDecayMixin:
    """``learning_rate_decay``: every parameter group's learning rate is multiplied by it after
    each training epoch (the learning rates live in the optimiser's state, so a resumed run
    continues the schedule)."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        result = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        decay = self.config["learning_rate_decay"]
        if decay is not None:
            for group in self.optimizer.param_groups:
                group["lr"] *= float(decay)
        return result


class StockWholeSequenceMixin:
    """``stock_whole_sequence``: RecBole's training loop with the whole-sequence loss in place of
    the stock model's ``calculate_loss`` (the loader yields whole sequences, data/utils); the
    model's forward, evaluation and prediction stay RecBole's."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if loss_func is None and uses_stock_whole_sequence(self.config, type(self.model)):
            loss_func = partial(whole_sequence_loss, self.model, target_field=self.config["TARGET_ITEM_LIST_FIELD"])
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)


PLUGIN_MIXINS = (StockWholeSequenceMixin, CPUDistributedMixin, RunRecordMixin, EpochTimerMixin, LearningRateDecayMixin,
                 ModelParamGroupsMixin, SafeCheckpointMixin, BranchMetricsMixin, HistoryMaskMixin)


def with_plugin_mixins(trainer_class: type) -> type:
    """A subclass of ``trainer_class`` with the plugin's timing, epoch history, safe checkpoint load and
    history masking."""
    if issubclass(trainer_class, HistoryMaskMixin):
        return trainer_class
    return type(trainer_class.__name__, PLUGIN_MIXINS + (trainer_class,), {})


class MMTrainer(CPUDistributedMixin, RunRecordMixin, EpochTimerMixin, LearningRateDecayMixin, ModelParamGroupsMixin,
                SafeCheckpointMixin, BranchMetricsMixin, HistoryMaskMixin, Trainer):
    """RecBole's Trainer with the plugin's mixins; the default trainer of the plugin's models."""
