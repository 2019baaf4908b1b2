from recbole_mm.model.sequential_recommender.ant import ANT
from recbole_mm.model.sequential_recommender.ant_e import ANT_e
from recbole_mm.model.sequential_recommender.nova import NOVA
from recbole_mm.model.sequential_recommender.odmt import ODMT
from recbole_mm.model.sequential_recommender.pmmrec import PMMRec
from recbole_mm.model.sequential_recommender.sasrecpp import SASRecPP
from recbole_mm.model.sequential_recommender.unisrec import UniSRec
from recbole_mm.model.sequential_recommender.unisrec_e import UniSRec_e

__all__ = ["ANT", "ANT_e", "NOVA", "ODMT", "PMMRec", "SASRecPP", "UniSRec", "UniSRec_e"]
