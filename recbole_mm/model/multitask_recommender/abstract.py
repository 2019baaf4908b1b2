"""Base class of the multi-task CTR/CVR backbones."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType

from recbole_mm.checkpoint import load_model_checkpoint
from recbole_mm.data.aliexpress import N_NUMERICAL as N_NUMERICAL_ALIEXPRESS
from recbole_mm.enum_type import MMModelType
from recbole_mm.model.multitask_layers import CategoricalNumericalInput, mlp

TASKS = ("ctr", "ctcvr")


def vocab_sizes_of(checkpoint_file: str, key: str = "init_checkpoint") -> List[int]:
    """Categorical vocabulary sizes of a saved multi-task model (from its embedding shapes); ``key``:
    the config key that names the file."""
    state = load_model_checkpoint(checkpoint_file, key)["state_dict"]
    sizes, j = [], 0
    while f"input_layer.embeddings.{j}.weight" in state:
        sizes.append(state[f"input_layer.embeddings.{j}.weight"].shape[0] - 1)  # last row: out of vocabulary
        j += 1
    if not sizes:
        raise ValueError(f"config key `{key}`: {checkpoint_file} holds no multi-task model "
                         f"(no input_layer.embeddings.*)")
    return sizes


class MultiTaskRecommender(AbstractRecommender):
    """Two outputs per row: CTR = p(click) and CTCVR = p(click) * p(conversion | click); with
    ``chain_tasks`` false (the default on a converted tabular data set) two independent outputs,
    p(task 1) and p(task 2).

    A subclass builds its shared part in ``build_backbone(input_dim)`` and returns, from
    ``tower_inputs(x)``, the vector each task tower reads (the features the adversarial critics
    see). Towers are ``MLP(tower_dims)`` + a linear output. Loss: BCE(CTR, click) +
    BCE(CTCVR, conversion). ``predict`` returns (N, 2) probabilities.
    """

    type = MMModelType.MULTITASK
    input_type = InputType.POINTWISE
    tasks = TASKS

    def __init__(self, config, dataset):
        super().__init__()
        self.config = config
        self.device = config["device"]
        init = config["init_checkpoint"]
        vocab = config["categorical_vocab_sizes"] or (vocab_sizes_of(init) if init else dataset.vocab_sizes())
        chain = config["chain_tasks"]  # ~: the data set's (a tabular layout: independent tasks)
        self.chain_tasks = bool(getattr(dataset, "chain_tasks", True) if chain is None else chain)
        n_numerical = getattr(dataset, "n_numerical", N_NUMERICAL_ALIEXPRESS)  # <D>.tabular.json's, or AliExpress's 63
        self.input_layer = CategoricalNumericalInput(vocab, n_numerical, config["embedding_size"])
        self.dropout_prob = config["dropout_prob"]
        self.tower_input_dim = self.build_backbone(self.input_layer.output_dim)
        self.towers = nn.ModuleList(self.build_tower() for _ in self.tasks)
        self.outputs = nn.ModuleList(nn.Linear(config["tower_dims"][-1], 1) for _ in self.tasks)
        if init:
            self.load_state_dict(load_model_checkpoint(init, "init_checkpoint")["state_dict"])

    # ----- subclasses --------------------------------------------------------------------------
    def build_backbone(self, input_dim: int) -> int:
        """Build the shared layers; return the size of each tower's input."""
        raise NotImplementedError

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    def build_tower(self) -> nn.Module:
        return mlp(self.tower_input_dim, self.config["tower_dims"], self.dropout_prob)

    def task_logits(self, tower_inputs: List[torch.Tensor]) -> torch.Tensor:
        """(N, 2) logits of click and of conversion given click."""
        return torch.cat([out(tower(h)) for h, tower, out in zip(tower_inputs, self.towers, self.outputs)], dim=1)

    # ----- RecBole interface -------------------------------------------------------------------
    def features(self, interaction) -> List[torch.Tensor]:
        return self.tower_inputs(self.input_layer(interaction["categorical"], interaction["numerical"]))

    def probabilities(self, tower_inputs: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.task_logits(tower_inputs)
        ctr, second = torch.sigmoid(logits[:, 0]), torch.sigmoid(logits[:, 1])
        return ctr, (ctr * second if self.chain_tasks else second)

    def forward(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(self.features(interaction))

    def task_loss(self, ctr: torch.Tensor, ctcvr: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        eps = 1e-7
        return (F.binary_cross_entropy(ctr.clamp(eps, 1 - eps), labels[:, 0])
                + F.binary_cross_entropy(ctcvr.clamp(eps, 1 - eps), labels[:, 1]))

    def calculate_loss(self, interaction) -> torch.Tensor:
        ctr, ctcvr = self.forward(interaction)
        return self.task_loss(ctr, ctcvr, interaction["labels"])

    def predict(self, interaction) -> torch.Tensor:
        ctr, ctcvr = self.forward(interaction)
        return torch.stack([ctr, ctcvr], dim=1)
