"""Sequential data sets of the plugin.

``BenchmarkSequentialDataset`` reads the pre-split ``<D>.train/valid/test.inter`` files
(RecBole's ``benchmark_filename``) and keeps only the most recent
``MAX_ITEM_LIST_LENGTH`` items of each history (RecBole's own ``seq_len`` option would
keep the oldest). ``MMSequentialDataset`` adds item features per modality, aligned to
internal item ids through ``field2id_token``, and for end-to-end encoders the raw item texts
and images.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureType

from recbole_mm.data.atomic_files import non_finite_as_missing
from recbole_mm.data.features import (
    FeatureFileError,
    ItemFeature,
    align_features,
    check_modalities,
    feature_folders,
    feature_stem,
    locate_feature_stem,
    log_popularity,
    read_feature_file,
)
from recbole_mm.data.raw_items import ItemImages, ItemTexts, clip_image_size, load_item_images, load_item_texts


class BenchmarkSequentialDataset(SequentialDataset):
    """``SequentialDataset`` whose list fields keep the *last* ``MAX_ITEM_LIST_LENGTH`` items.

    A ``<D>.item`` / ``<D>.user`` file missing from the data folder is also looked for in
    ``feature_dir`` and in ``dataset/<D>`` (:func:`feature_folders`): pre-split data folders may
    be read-only (``../shared/datasets``), so item attributes built by the preprocessing (e.g. the
    categories that FDSA and S3Rec use) live beside the feature files.
    """

    def _load_user_or_item_feat(self, token, dataset_path, source, field_name):
        if not os.path.isfile(os.path.join(dataset_path, f"{token}.{source.value}")):
            for folder in feature_folders(self.config["feature_dir"], dataset_path, token):
                if os.path.isfile(os.path.join(folder, f"{token}.{source.value}")):
                    dataset_path = folder
                    break
        return super()._load_user_or_item_feat(token, dataset_path, source, field_name)

    def _load_feat(self, filepath, source):
        """RecBole's reading, then infinite float values made missing (counted in the log; RecBole
        fills them with the column mean), so none reaches a model or a normalisation bound."""
        frame = super()._load_feat(filepath, source)
        if frame is not None:
            floats = [f for f in frame.columns if self.field2type.get(f) == FeatureType.FLOAT]
            non_finite_as_missing(frame, floats, filepath)
        return frame

    def item_log_popularity(self) -> np.ndarray:
        """log p(item) over this split's target items, (n_items,), add-one smoothed; 0 for padding
        (the popularity prior of in-batch losses; call it on the training split)."""
        return log_popularity(self.inter_feat[self.iid_field].numpy(), self.item_num)

    def _benchmark_presets(self):
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        list_suffix = self.config["LIST_SUFFIX"]
        for field in list(self.inter_feat.columns):
            if field.endswith(list_suffix) and field in self.field2seqlen:
                column = self.inter_feat[field]
                if self.field2seqlen[field] > max_len:
                    self.inter_feat[field] = [seq[-max_len:] for seq in column.values]
                    self.field2seqlen[field] = max_len
        super()._benchmark_presets()


class MMSequentialDataset(BenchmarkSequentialDataset):
    """Sequential data set with per-modality item features.

    Config keys (see properties/overall.yaml): ``modalities``, ``feature_dir``,
    ``feature_files``, ``feature_unknown_items``, ``feature_dims``.

    After construction ``self.item_features[modality]`` is an :class:`ItemFeature` whose
    row ``i`` belongs to internal item id ``i``; items without the modality have
    ``mask[i] == False`` and a zero row.

    With ``encoder_mode: end_to_end`` (PMMRec) the raw items are loaded too, row ``i`` again
    belonging to internal item id ``i``: ``self.item_texts`` (:class:`ItemTexts`) when
    ``text_encoder_path`` is set, ``self.item_images`` (:class:`ItemImages`, sized for the CLIP
    vision encoder of ``image_encoder_path``) when that is set; otherwise they are None. Config
    keys: ``raw_text_file``, ``item_key_map``, ``image_dir`` (properties/model/PMMRec.yaml).
    """

    def __init__(self, config):
        super().__init__(config)
        self.item_features: Dict[str, ItemFeature] = self._load_item_features()
        self.item_texts: Optional[ItemTexts] = None
        self.item_images: Optional[ItemImages] = None
        if self.config["encoder_mode"] == "end_to_end":
            self._load_raw_items()

    def _load_item_features(self) -> Dict[str, ItemFeature]:
        folders = feature_folders(self.config["feature_dir"], self.dataset_path, self.dataset_name)
        file_names = self.config["feature_files"] or {}
        expected_dims = self.config["feature_dims"] or {}
        for key in list(file_names) + list(expected_dims):
            check_modalities([key], key="feature_files / feature_dims")
        modalities = self._run_modalities(folders, file_names)
        id2token = self.field2id_token[self.iid_field]
        features = {}
        for modality in modalities:
            name = file_names.get(modality)
            stem = locate_feature_stem(folders, self.dataset_name, modality, name)
            try:
                keys, matrix = read_feature_file(stem or feature_stem(folders[0], self.dataset_name, modality, name))
            except FeatureFileError as err:
                elsewhere = f" (looked in {', '.join(folders)})" if len(folders) > 1 else ""
                raise FeatureFileError(
                    f"{err}{elsewhere}. Modality {modality!r} is listed in config key `modalities`; "
                    f"remove it there or build the file"
                ) from None
            features[modality] = align_features(
                modality,
                keys,
                matrix,
                id2token,
                source=os.path.basename(stem) + ".npy",
                unknown_items=self.config["feature_unknown_items"] or "error",
                expected_dim=expected_dims.get(modality),
            )
            self.logger.info(
                f"[{self.dataset_name}] {modality} features: dim {features[modality].dim}, "
                f"{features[modality].coverage:.1%} of items present ({stem}.npy)"
            )
        return features

    def _run_modalities(self, folders, file_names) -> List[str]:
        """Config key ``modalities``; when neither the user nor ``properties/dataset/<D>.yaml``
        sets it, the default's modalities whose feature files are present (logged, and written
        back to the config, which the model reads)."""
        modalities = check_modalities(self.config["modalities"] or [])
        given = getattr(self.config, "given", None)
        if given is None or given("modalities"):
            return modalities
        present = [m for m in modalities if locate_feature_stem(folders, self.dataset_name, m, file_names.get(m))]
        if not present:  # nothing built: the error names the first missing file
            return modalities
        self.logger.info(
            f"[{self.dataset_name}] modalities {present}: the feature files present (in {', '.join(folders)}); "
            f"`modalities` is set neither on the command line or in a config file nor in "
            f"properties/dataset/{self.dataset_name}.yaml"
        )
        self.config["modalities"] = present
        return present

    def _load_raw_items(self) -> None:
        """``item_texts`` / ``item_images`` for the end-to-end encoders named in the config."""
        config, folder = self.config, self.dataset_path  # RecBole has already appended the data set name
        id2token = self.field2id_token[self.iid_field]
        key_map = config["item_key_map"]
        if key_map is None:
            default_map = os.path.join(folder, f"{self.dataset_name}.item2index")
            key_map = default_map if os.path.isfile(default_map) else None
        if config["text_encoder_path"]:
            text_file = config["raw_text_file"] or os.path.join(folder, f"{self.dataset_name}.text")
            self.item_texts = load_item_texts(text_file, id2token, key_map)
        if config["image_encoder_path"]:
            size = clip_image_size(config["image_encoder_path"])
            self.item_images = load_item_images(config["image_dir"] or os.path.join(folder, "images"), id2token,
                                                size, key_map)


def feature_tensor(feature: ItemFeature):
    """(matrix, mask) of an :class:`ItemFeature` as torch tensors."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(feature.matrix)), torch.from_numpy(feature.mask.copy())
