"""Model and trainer lookup by name: the plugin first, then RecBole.

Bottom layer, as RecBole's ``recbole.utils``: models and trainers are found by name through
``importlib`` (RecBole's own registry pattern), so this module imports none of them.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import importlib.util
import pkgutil
import warnings
from typing import List

import torch
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mm.enum_type import MMModelType

PLUGIN_MODEL_KINDS = ("sequential_recommender", "multitask_recommender")
MODEL_ALIASES = {"SASRec++": "SASRecPP"}  # names a Python class cannot carry


def _plugin_model_class(model_name: str):
    model_name = MODEL_ALIASES.get(model_name, model_name)
    for kind in PLUGIN_MODEL_KINDS:
        package = f"recbole_mm.model.{kind}"
        if importlib.util.find_spec(package) is None:
            continue
        module_path = f"{package}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    return None


def available_models() -> List[str]:
    """Names of the plugin's models and of RecBole's (module names, lower case for RecBole)."""
    names = []
    for kind in PLUGIN_MODEL_KINDS:
        try:
            package = importlib.import_module(f"recbole_mm.model.{kind}")
        except ImportError:
            continue
        names += list(getattr(package, "__all__", []))
    for sub in ("general_recommender", "sequential_recommender", "context_aware_recommender",
                "knowledge_aware_recommender", "exlib_recommender"):
        spec = importlib.util.find_spec(f"recbole.model.{sub}")  # no import: exlib needs optional packages
        if spec is not None and spec.submodule_search_locations:
            for module in pkgutil.iter_modules(spec.submodule_search_locations):
                names.append(_class_name_in_module(module, module.name))
    return names


def _class_name_in_module(module_info, module_name: str) -> str:
    """The class of a RecBole model module whose name matches the module's (read, not imported)."""
    path = os.path.join(module_info.module_finder.path, module_name + ".py")
    try:
        with open(path, "r", encoding="utf-8") as f:
            for match in re.finditer(r"^class (\w+)\(", f.read(), flags=re.M):
                if match.group(1).lower() == module_name:
                    return match.group(1)
    except OSError:
        pass
    return module_name


def get_model(model_name: str):
    """The model class named ``model_name``: the plugin's if it has one, else RecBole's."""
    model_class = _plugin_model_class(model_name)
    if model_class is not None:
        return model_class
    anomaly = torch.is_anomaly_enabled()
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        by_lower = {name.lower(): name for name in available_models()}
        close = [by_lower[m] for m in difflib.get_close_matches(model_name.lower(), list(by_lower), n=3, cutoff=0.6)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {model_name!r}: it is neither a recbole_mm model nor a RecBole model.{hint}"
        ) from None
    finally:
        # RecBole 1.2.1's SINE module switches autograd anomaly detection on for the whole process
        # when its package is imported (by any stock model lookup): slow, and it turns benign NaNs
        # of masked entries into errors. Keep the state the caller had.
        torch.autograd.set_detect_anomaly(anomaly)


# Trainer classes of the plugin's model families (recbole_mm.trainer), chosen by the declared type
PLUGIN_TRAINERS = {
    ModelType.SEQUENTIAL: "MMTrainer",
    MMModelType.MULTITASK: "MultiTaskTrainer",
    MMModelType.ADVERSARIAL: "AdversarialTrainer",
}


def is_plugin_model(model_name: str) -> bool:
    """Whether ``model_name`` names one of the plugin's models (not a stock RecBole model)."""
    return _plugin_model_class(model_name) is not None


def get_trainer(model_type, model_name: str, stage: str = "train"):
    """The trainer class, as RecBole's ``get_trainer`` chooses it (looked up by name in the
    trainer package, so this bottom-layer module imports no trainer):

    - ``stage: pretrain``: ``PretrainTrainer`` (multi-domain pre-training);
    - ``recbole_mm.trainer.<Model>Trainer`` if it exists;
    - a plugin model: the trainer of its declared ``type`` (``PLUGIN_TRAINERS``);
    - a stock model: RecBole's choice with the plugin's mixins (safe checkpoint load, history
      masking, timing, CPU-distributed).
    """
    trainers = importlib.import_module("recbole_mm.trainer")
    if stage == "pretrain":
        return trainers.PretrainTrainer
    if hasattr(trainers, model_name + "Trainer"):
        return getattr(trainers, model_name + "Trainer")
    if is_plugin_model(model_name):
        if model_type not in PLUGIN_TRAINERS:
            raise ValueError(f"model {model_name} declares type {model_type}, which no plugin trainer serves "
                             f"(known: {[str(t) for t in PLUGIN_TRAINERS]})")
        return getattr(trainers, PLUGIN_TRAINERS[model_type])
    return trainers.with_plugin_mixins(recbole_get_trainer(model_type, model_name))


def quiet_known_warnings() -> None:
    """Hide the FutureWarnings that RecBole 1.2.1's own code raises under pandas 2 and torch 2
    (chained ``fillna(inplace=True)``, ``Series.agg(len)``, ``torch.cuda.amp.GradScaler``): they
    repeat on every run, say nothing about the user's run, and hide its log. Called by the command
    lines; library callers keep Python's defaults. Warnings from other code are untouched."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
