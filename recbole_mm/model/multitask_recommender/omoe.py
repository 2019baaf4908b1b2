"""OMoE: one-gate mixture of experts."""

from recbole_mm.model.multitask_recommender.mmoe import MMoE


class OMoE(MMoE):
    """OMoE (the one-gate baseline of the MMoE paper): like :class:`MMoE` with one gate shared by
    both tasks."""

    n_gates = 1
