"""Training objectives (losses) shared by the plugin's models.

The targets of a training batch come from
:meth:`recbole_mm.model.abstract_recommender.MMSequentialRecommender.training_targets`.

- :func:`in_batch_logits` / :func:`in_batch_ce`: next-item softmax over the distinct target
  items of the batch, minus log popularity, the user's other history items masked;
- :func:`distillation_kl`: temperature-scaled KL divergence (soft cross-entropy minus the
  teacher's entropy) for ODMT's online distillation;
- :func:`corrupt_sequence`, :func:`nicl_masks`, :func:`multi_positive_info_nce`,
  :func:`symmetric_info_nce`: PMMRec's NID, NICL and RCL pieces.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F



class InBatch(NamedTuple):
    """The loss positions of a batch and its candidate set."""

    rows: torch.Tensor  # (N,) batch row of every loss position
    positions: torch.Tensor  # (N,) sequence position of every loss position
    labels: torch.Tensor  # (N,) index of the target item among the candidates
    candidates: torch.Tensor  # (C,) distinct target item ids of the batch, ascending
    history_mask: torch.Tensor  # (N, C) True: candidate is another item of the user's row


def in_batch_layout(inputs: torch.Tensor, targets: torch.Tensor) -> InBatch:
    """Loss positions (``targets > 0``), the distinct target items as candidates and, for every
    position, which candidates are items of the same user's row (inputs or targets) other than
    the position's own target."""
    valid = targets > 0
    rows, positions = valid.nonzero(as_tuple=True)
    target_ids = targets[valid]
    candidates, labels = torch.unique(target_ids, sorted=True, return_inverse=True)
    row_items = torch.cat([inputs, targets], dim=1)  # (B, 2L)
    in_row = (row_items.unsqueeze(-1) == candidates.view(1, 1, -1)).any(dim=1)  # (B, C)
    history_mask = in_row[rows]
    history_mask[torch.arange(len(labels), device=labels.device), labels] = False
    return InBatch(rows, positions, labels, candidates, history_mask)


def log_inclusion_probability(log_prior: torch.Tensor, n_draws: int) -> torch.Tensor:
    """``log(1 - (1 - p)^n)``: the log probability that an item of popularity ``p`` (given as
    ``log p``) is among the *distinct* items of ``n`` independent popularity draws. Computed as
    ``log(-expm1(n * log1p(-p)))`` in float64 (exact for rare items, where it is about
    ``log n + log p``, and for items with ``p`` near 1, where it goes to 0)."""
    p = log_prior.double().exp()
    return torch.log(-torch.expm1(n_draws * torch.log1p(-p))).to(log_prior.dtype)


def in_batch_logits(user: torch.Tensor, candidate_emb: torch.Tensor, layout: InBatch,
                    log_prior: Optional[torch.Tensor] = None, distinct_candidates: bool = False) -> torch.Tensor:
    """(N, d) users x (C, d) candidates -> (N, C) logits minus the log sampling probability of
    each candidate (logQ correction, Yi et al., RecSys 2019), history items -inf.

    ``distinct_candidates=False``: ``u . v - log p(v)``, right when every draw is its own
    column (duplicates kept). ``True``: ``u . v - log(1 - (1 - p(v))^N)`` with ``N`` the
    number of loss positions (target draws), the probability that ``v`` is in the set of
    distinct candidates :func:`in_batch_layout` builds (see :func:`log_inclusion_probability`).
    """
    logits = user @ candidate_emb.t()
    if log_prior is not None:
        prior = log_prior[layout.candidates]
        if distinct_candidates:
            prior = log_inclusion_probability(prior, len(layout.labels))
        logits = logits - prior.view(1, -1)
    return logits.masked_fill(layout.history_mask, float("-inf"))


def in_batch_ce(logits: torch.Tensor, layout: InBatch) -> torch.Tensor:
    return F.cross_entropy(logits, layout.labels)


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                    detach_teacher: bool = False) -> torch.Tensor:
    """``tau^2 * mean_n KL(softmax(teacher / tau) || softmax(student / tau))``.

    Equal to the soft cross-entropy minus the teacher's entropy: the same gradient for the
    student, and exactly zero when student and teacher agree. Masked (-inf) entries of either
    are ignored.
    """
    if detach_teacher:
        teacher = teacher.detach()
    masked = torch.isinf(student) | torch.isinf(teacher)
    student = (student / temperature).masked_fill(masked, -1e9)
    teacher = (teacher / temperature).masked_fill(masked, -1e9)
    log_p_teacher = F.log_softmax(teacher, dim=-1)
    log_p_student = F.log_softmax(student, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl.mean() * temperature**2


def ramp_weight(epoch: int, alpha: float) -> float:
    """ODMT's distillation weight: ``exp(-5 (1 - min(epoch, alpha) / alpha)^2)`` for
    ``alpha >= 1`` (epochs counted from 1, as the public code does), the constant ``alpha`` below 1."""
    if alpha < 1:
        return float(alpha)
    phase = 1.0 - min(float(epoch), alpha) / alpha
    return math.exp(-5.0 * phase * phase)


# ----- PMMRec's auxiliary objectives --------------------------------------------------------
def corrupt_sequence(item_seq: torch.Tensor, ratio: float, n_items: int,
                     generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """NID noise: each real position is replaced with probability ``ratio`` by a uniformly drawn
    item other than the original (never padding). Returns (noised sequence, labels) where
    ``labels`` is 1.0 exactly at the replaced positions (float, for BCE)."""
    valid = item_seq > 0
    draw = torch.rand(item_seq.shape, generator=generator, device=item_seq.device)
    replace = valid & (draw < ratio)
    # uniform over {1, ..., n_items - 1} minus the original: draw from n_items - 2 values and skip it
    random_items = torch.randint(1, max(2, n_items - 1), item_seq.shape, generator=generator,
                                 device=item_seq.device)
    random_items = random_items + (random_items >= item_seq).long()
    noised = torch.where(replace, random_items, item_seq)
    return noised, replace.float()


class NICLMasks(NamedTuple):
    """Anchors and candidates of NICL with their positive / negative relations.

    Anchor ``a`` in ``[0, 2P)``: modality ``a // P`` (0 text, 1 image) of the input item at
    loss position ``a % P``. Candidate ``k`` in ``[0, 2U)``: modality ``k // U`` of item
    ``items[k % U]``.
    """

    items: torch.Tensor  # (U,) distinct items of the batch (inputs and targets), ascending
    anchor_items: torch.Tensor  # (2P,)
    candidate_items: torch.Tensor  # (2U,)
    positive: torch.Tensor  # (2P, 2U) bool
    negative: torch.Tensor  # (2P, 2U) bool


def nicl_masks(inputs: torch.Tensor, targets: torch.Tensor, has_image: torch.Tensor) -> NICLMasks:
    """NICL's relations on a batch (``has_image``: (n_items,) bool, text is always present).

    For the item ``x`` at a loss position of user ``b`` whose next item is ``y``:
    positives of x's text are x's image and y's text and image; positives of x's image are x's
    text and y's text and image (cross-modal same item; next item across and within modality).
    Negatives are both modalities of every batch item that occurs nowhere in user b's row.
    A candidate image of an item without an image, or an anchor image of such an item, takes
    part in nothing. The anchor itself is never a candidate of its own.
    """
    valid = (targets > 0) & (inputs > 0)
    rows = valid.nonzero(as_tuple=True)[0]
    x, y = inputs[valid], targets[valid]
    items = torch.unique(torch.cat([inputs[inputs > 0], targets[targets > 0]]), sorted=True)
    n_pos, n_items = len(x), len(items)
    anchor_items, anchor_mod = x.repeat(2), torch.arange(2, device=x.device).repeat_interleave(n_pos)
    cand_items = items.repeat(2)
    cand_mod = torch.arange(2, device=x.device).repeat_interleave(n_items)
    anchor_next = y.repeat(2)
    same_item = anchor_items.view(-1, 1) == cand_items.view(1, -1)
    other_mod = anchor_mod.view(-1, 1) != cand_mod.view(1, -1)
    is_next = anchor_next.view(-1, 1) == cand_items.view(1, -1)
    positive = (same_item & other_mod) | is_next
    row_items = torch.cat([inputs, targets], dim=1)  # (B, 2L)
    in_row = (row_items.unsqueeze(-1) == items.view(1, 1, -1)).any(dim=1)  # (B, U)
    negative = ~in_row[rows].repeat(2, 2)
    usable_anchor = (anchor_mod == 0) | has_image[anchor_items]
    usable_cand = (cand_mod == 0) | has_image[cand_items]
    usable = usable_anchor.view(-1, 1) & usable_cand.view(1, -1)
    positive = positive & usable & ~(same_item & ~other_mod)
    negative = negative & usable
    return NICLMasks(items, anchor_items, cand_items, positive, negative)


def multi_positive_info_nce(sim: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                            temperature: float) -> torch.Tensor:
    """Mean over (anchor, positive) pairs of ``-log(e^{s_p} / (e^{s_p} + sum_neg e^{s_n}))``
    (each positive contrasted with the anchor's negatives only)."""
    if not positive.any():
        return sim.sum() * 0.0
    logits = sim / temperature
    neg_lse = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=-1, keepdim=True)
    loss = -(logits - torch.logaddexp(logits, neg_lse))  # -log sigma-like term, per pair
    return loss[positive].mean()


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float,
                       groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """InfoNCE between two views (row i of ``a`` and of ``b`` are positives, other rows of the
    other view are negatives), averaged over both directions; cosine similarities. ``groups``
    (e.g. the rows' user ids): another row of the same group is no negative (masked out)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.size(0), device=a.device)
    if groups is not None:
        same = groups.view(-1, 1) == groups.view(1, -1)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
