"""The real Scientific data (../shared/datasets/Scientific): loader statistics and feature alignment.
Skips with a reason when the folder is absent."""

import os

import numpy as np
import pytest

from helpers import SHARED_DATASETS
from recbole_mm.config import MMConfig
from recbole_mm.data.dataset import MMSequentialDataset
from recbole_mm.data.raw_items import read_item2index
from recbole_mm.data.utils import create_dataset
from recbole_mm.preprocess.benchmark import import_image_npz

SCIENTIFIC = os.path.join(SHARED_DATASETS, "Scientific")
pytestmark = pytest.mark.skipif(
    not os.path.isdir(SCIENTIFIC), reason=f"real data not available: {SCIENTIFIC} is absent"
)


@pytest.fixture(scope="module")
def image_features(tmp_path_factory):
    out = tmp_path_factory.mktemp("sci_features")
    import_image_npz(SCIENTIFIC, str(out), "Scientific", "Scientific.clip_image.npz")
    return str(out)


def test_scientific_statistics_match_the_paper():
    config = MMConfig("SASRec", "Scientific", config_dict={"data_path": SHARED_DATASETS, "state": "WARNING"})
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    assert dataset.user_num - 1 == 8442
    assert dataset.item_num - 1 == 4385
    assert len(train.inter_feat) == 34101 and len(valid.inter_feat) == 8442 and len(test.inter_feat) == 8442
    # every interaction: train prefix targets + one valid and one test target per user + the first item
    assert len(train.inter_feat) + 2 * 8442 + 8442 == 59427


def test_image_features_align_by_asin(image_features):
    config = MMConfig(
        "ANT", "Scientific",
        config_dict={"data_path": SHARED_DATASETS, "feature_dir": image_features, "modalities": ["image"],
                     "state": "WARNING"},
    )
    dataset = create_dataset(config)
    assert isinstance(dataset, MMSequentialDataset)
    image = dataset.item_features["image"]
    assert image.dim == 512
    assert image.mask[1:].sum() == 1585  # 36 % of the 4,385 items have a picture
    npz = np.load(os.path.join(SCIENTIFIC, "Scientific.clip_image.npz"))
    item2index = read_item2index(os.path.join(SCIENTIFIC, "Scientific.item2index"))
    token2id = {tok: i for i, tok in enumerate(dataset.field2id_token["item_id"])}
    for row in (0, 17, 1584):
        internal = token2id[item2index[str(npz["asin"][row])]]
        np.testing.assert_allclose(image.matrix[internal], npz["feat"][row])
    no_image = [token2id[idx] for asin, idx in item2index.items() if asin not in set(npz["asin"].tolist())][:5]
    assert not image.mask[no_image].any()
