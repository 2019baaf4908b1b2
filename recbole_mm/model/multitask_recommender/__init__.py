from recbole_mm.model.multitask_recommender.aitm import AITM
from recbole_mm.model.multitask_recommender.daa import DAA
from recbole_mm.model.multitask_recommender.mmoe import MMoE
from recbole_mm.model.multitask_recommender.omoe import OMoE
from recbole_mm.model.multitask_recommender.ple import PLE
from recbole_mm.model.multitask_recommender.sharedbottom import SharedBottom
from recbole_mm.model.multitask_recommender.taa import TAA

__all__ = ["SharedBottom", "OMoE", "MMoE", "PLE", "AITM", "TAA", "DAA"]
