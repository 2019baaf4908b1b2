"""Multi-domain pre-training (``--stage=pretrain --dataset=A,B,C``), docs/transfer.md.

Every domain is loaded as its own data set (own item ids, own feature files), the domains'
training sequences are shuffled together into mixed batches
(:mod:`recbole_mm.data.multidomain`) and the model's ``pretrain_loss`` (in-batch contrastive)
is minimised for ``epochs`` epochs. No validation: after every epoch the transferable
checkpoint (:func:`recbole_mm.transfer.save_pretrained`) is rewritten atomically.
"""

from __future__ import annotations

import os
from logging import getLogger
from typing import List

from recbole.utils import get_local_time, set_color

from recbole_mm.trainer.trainer import MMTrainer
from recbole_mm.transfer import save_pretrained


class PretrainTrainer(MMTrainer):
    """RecBole trainer loop on ``model.pretrain_loss``; writes the transferable checkpoint."""

    def pretrain(self, train_data, checkpoint_file: str, metadata: dict, show_progress: bool = False) -> List[dict]:
        """Train for ``epochs`` epochs; returns the mean loss parts of every epoch."""
        history = []
        for epoch in range(self.start_epoch, self.epochs):
            total = self._train_epoch(train_data, epoch, loss_func=self.model.pretrain_loss,
                                      show_progress=show_progress)
            parts = total if isinstance(total, tuple) else (total, 0.0)
            record = {"seq_item": parts[0] / len(train_data), "auxiliary": parts[1] / len(train_data)}
            record["total"] = record["seq_item"] + record["auxiliary"]
            history.append(record)
            self.logger.info(set_color(f"pretrain epoch {epoch}", "green") + f": {record}")
            save_pretrained(self.model, checkpoint_file, {**metadata, "epochs": epoch + 1, "pretrain_loss": history})
        return history


def run_pretrain(config, log_file: str) -> dict:
    """Pre-train ``config['model']`` on the domains named in ``config['dataset']`` (comma list).

    Each domain's config is the run's external settings with that domain as ``dataset`` (so a
    ``properties/dataset/<domain>.yaml`` applies per domain).
    """
    from recbole_mm.config import MMConfig
    from recbole_mm.data.multidomain import MultiDomainDataset, MultiDomainTrainLoader, domain_names
    from recbole_mm.data.utils import create_dataset
    from recbole_mm.utils import get_model

    logger = getLogger()
    if not config["single_spec"]:
        raise NotImplementedError("stage pretrain runs in one process: drop --nproc")
    model_class = get_model(config["model"])
    if not hasattr(model_class, "pretrain_loss"):
        raise TypeError(f"model {config['model']} has no pretrain_loss(): stage pretrain needs a transferable "
                        f"model (ANT, UniSRec, docs/transfer.md)")
    names = domain_names(config["dataset"])
    external = {k: v for k, v in config.external_config_dict.items() if k != "dataset"}
    datasets = []
    for name in names:
        datasets.append(create_dataset(MMConfig(config["model"], name, config_dict=external)))
        logger.info(datasets[-1])
    multi = MultiDomainDataset(datasets, names)
    logger.info(multi)
    train_data = MultiDomainTrainLoader(config, multi, shuffle=True)
    model = model_class(config, multi).to(config["device"])
    logger.info(model)
    trainer = PretrainTrainer(config, model)
    checkpoint = os.path.join(config["checkpoint_dir"], f"{config['model']}-pretrain-{'+'.join(names)}-"
                                                        f"{get_local_time()}.pth")
    metadata = {"domains": names, "n_items": multi.domain_items}
    history = trainer.pretrain(train_data, checkpoint, metadata, show_progress=config["show_progress"])
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "stage": "pretrain",
        "domains": names,
        "n_items": multi.domain_items,
        "pretrain_loss": history,
        "epochs_trained": len(history),
        "train_epoch_seconds": getattr(trainer, "train_epoch_seconds", []),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "checkpoint": checkpoint if history else None,
        "log_file": log_file,
        "device": str(config["device"]),
    }
