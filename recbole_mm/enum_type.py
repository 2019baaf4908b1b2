"""Model types the plugin adds to RecBole's ``ModelType`` (as RecBole-GNN adds its own).

A model declares its family through its class attribute ``type``; the data set, the loaders
and the trainer are chosen from ``config["MODEL_TYPE"]`` (:mod:`recbole_mm.data.utils`,
:func:`recbole_mm.utils.get_trainer`), never by probing the model class. Plugin sequential
models keep RecBole's ``ModelType.SEQUENTIAL``: RecBole's config and loaders rely on it.
"""

from enum import Enum


class MMModelType(Enum):
    """Model families of the plugin beyond RecBole's ``ModelType``.

    - ``MULTITASK``: multi-task CTR/CVR backbones (one row, several labels; per-task AUC/LogLoss).
    - ``ADVERSARIAL``: adversarial adaptation of a multi-task backbone (TAA, DAA): trained on a
      target sample with a source data set beside it.
    """

    MULTITASK = 101
    ADVERSARIAL = 102


MULTITASK_TYPES = (MMModelType.MULTITASK, MMModelType.ADVERSARIAL)
