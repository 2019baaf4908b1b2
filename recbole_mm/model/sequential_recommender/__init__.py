from recbole_mm.model.sequential_recommender.ant import ANT
from recbole_mm.model.sequential_recommender.ant_e import ANT_e

__all__ = ["ANT", "ANT_e"]
