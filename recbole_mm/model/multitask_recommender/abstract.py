"""Base class of the multi-task CTR/CVR backbones."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType

from recbole_mm.checkpoint import load_model_checkpoint
from recbole_mm.config import check_choice
from recbole_mm.data.aliexpress import N_NUMERICAL as N_NUMERICAL_ALIEXPRESS
from recbole_mm.enum_type import MMModelType
from recbole_mm.model.multitask_layers import CategoricalNumericalInput, mlp

TASKS = ("ctr", "ctcvr")


CTCVR_MODES = ("tower", "esmm")


def vocab_sizes_of(checkpoint_file: str, key: str = "init_checkpoint") -> List[int]:
    """Categorical vocabulary sizes of a saved multi-task model (its ``input_layer.vocab_sizes``
    buffer); ``key``: the config key that names the file."""
    state = load_model_checkpoint(checkpoint_file, key)["state_dict"]
    sizes = state.get("input_layer.vocab_sizes")
    if sizes is None:
        raise ValueError(f"config key `{key}`: {checkpoint_file} holds no multi-task model of this version "
                         f"(no input_layer.vocab_sizes)")
    return [int(v) for v in sizes.tolist()]


class MultiTaskRecommender(AbstractRecommender):
    """Two outputs per row, CTR = p(click) and CTCVR = p(click and conversion), built as MTReclib
    builds its models (Zhu et al., easezyc/Multitask-Recommendation-Library): the input layer of
    ``multitask_layers.CategoricalNumericalInput``, a backbone, one tower per task
    (``MLP(tower_dims)`` of Linear -> BatchNorm -> ReLU -> Dropout blocks, then ``Linear(-> 1)``)
    and a sigmoid; loss: the mean over the tasks of their binary cross-entropies.

    A subclass builds its shared part in ``build_backbone(input_dim)`` and returns, from
    ``tower_inputs(x)``, the vector each task tower reads (the features the adversarial critics
    see). ``predict`` returns (N, 2) probabilities.

    Differences from MTReclib, each a config key: ``ctcvr_mode: esmm`` predicts CTCVR as
    CTR * sigmoid(conversion tower) (ESMM, Ma et al. SIGIR 2018) instead of by the second tower
    alone; ``batch_norm: False`` drops the BatchNorm of every MLP block. Probabilities are
    clamped to [1e-7, 1 - 1e-7] inside the loss.
    """

    type = MMModelType.MULTITASK
    input_type = InputType.POINTWISE
    tasks = TASKS
    shared_tower_input = False  # True: every tower reads the same tensor (SharedBottom, OMoE)

    def __init__(self, config, dataset):
        super().__init__()
        self.config = config
        self.device = config["device"]
        self.ctcvr_mode = self.checked_ctcvr_mode(config["ctcvr_mode"])
        init = config["init_checkpoint"]
        vocab = config["categorical_vocab_sizes"] or (vocab_sizes_of(init) if init else dataset.vocab_sizes())
        n_numerical = getattr(dataset, "n_numerical", N_NUMERICAL_ALIEXPRESS)  # <D>.tabular.json's, or AliExpress's 63
        self.input_layer = CategoricalNumericalInput(vocab, n_numerical, config["embedding_size"])
        self.dropout_prob = config["dropout_prob"]
        self.batch_norm = bool(config["batch_norm"])
        self.tower_input_dim = self.build_backbone(self.input_layer.output_dim)
        self.towers = nn.ModuleList(self.build_tower() for _ in self.tasks)
        self.outputs = nn.ModuleList(nn.Linear(self.tower_output_dim(), 1) for _ in self.tasks)
        if init:
            self.load_state_dict(load_model_checkpoint(init, "init_checkpoint")["state_dict"])

    @staticmethod
    def checked_ctcvr_mode(mode) -> str:
        check_choice("ctcvr_mode", mode, CTCVR_MODES)
        return mode

    # ----- subclasses --------------------------------------------------------------------------
    def build_backbone(self, input_dim: int) -> int:
        """Build the shared layers; return the size of each tower's input."""
        raise NotImplementedError

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    def mlp(self, input_dim: int, dims) -> nn.Sequential:
        """An MLP of this model's blocks (its dropout, BatchNorm or not)."""
        return mlp(input_dim, dims, self.dropout_prob, self.batch_norm)

    def build_tower(self) -> nn.Module:
        return self.mlp(self.tower_input_dim, self.config["tower_dims"])

    def tower_output_dim(self) -> int:
        dims = self.config["tower_dims"]
        return dims[-1] if dims else self.tower_input_dim

    def task_logits(self, tower_inputs: List[torch.Tensor]) -> torch.Tensor:
        """(N, 2) logits, one per task tower."""
        return torch.cat([out(tower(h)) for h, tower, out in zip(tower_inputs, self.towers, self.outputs)], dim=1)

    # ----- RecBole interface -------------------------------------------------------------------
    def features(self, interaction) -> List[torch.Tensor]:
        return self.tower_inputs(self.input_layer(interaction["categorical"], interaction["numerical"]))

    def probabilities(self, tower_inputs: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(CTR, CTCVR): each tower's sigmoid (``tower``), or CTR * sigmoid(second) (``esmm``)."""
        probs = torch.sigmoid(self.task_logits(tower_inputs))
        ctr, second = probs[:, 0], probs[:, 1]
        return ctr, (ctr * second if self.ctcvr_mode == "esmm" else second)

    def forward(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(self.features(interaction))

    def task_loss(self, ctr: torch.Tensor, ctcvr: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean over the tasks of BCE(probability, label) (MTReclib's ``loss /= task_num``)."""
        eps = 1e-7
        losses = [F.binary_cross_entropy(p.clamp(eps, 1 - eps), labels[:, j]) for j, p in enumerate((ctr, ctcvr))]
        return torch.stack(losses).mean()

    def calculate_loss(self, interaction) -> torch.Tensor:
        ctr, ctcvr = self.forward(interaction)
        return self.task_loss(ctr, ctcvr, interaction["labels"])

    def predict(self, interaction) -> torch.Tensor:
        ctr, ctcvr = self.forward(interaction)
        return torch.stack([ctr, ctcvr], dim=1)
