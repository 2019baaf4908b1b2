"""OMoE: one-gate mixture of experts."""

from recbole_mm.model.multitask_recommender.mmoe import MMoE


class OMoE(MMoE):
    """OMoE (the one-gate baseline of the MMoE paper; Jacobs et al. 1991), as MTReclib's
    ``OMoEModel``: like :class:`MMoE` with one gate whose mixture both towers read."""

    n_gates = 1
    shared_tower_input = True
