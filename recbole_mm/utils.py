"""Model, trainer and data set lookup: the plugin first, then RecBole."""

from __future__ import annotations

import difflib
import importlib
import os
import re
import importlib.util
import pkgutil
from typing import List

from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

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
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        by_lower = {name.lower(): name for name in available_models()}
        close = [by_lower[m] for m in difflib.get_close_matches(model_name.lower(), list(by_lower), n=3, cutoff=0.6)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {model_name!r}: it is neither a recbole_mm model nor a RecBole model.{hint}"
        ) from None


def get_trainer(model_type, model_name: str):
    """The trainer class: ``recbole_mm.trainer.<Model>Trainer`` if it exists, else RecBole's choice;
    either way with the plugin's safe checkpoint loading and history masking."""
    from recbole_mm.trainer.trainer import MMTrainer, with_plugin_mixins

    plugin_trainers = importlib.import_module("recbole_mm.trainer")
    if hasattr(plugin_trainers, model_name + "Trainer"):
        return getattr(plugin_trainers, model_name + "Trainer")
    model_class = _plugin_model_class(model_name)
    if model_class is not None:
        from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender
        from recbole_mm.model.multitask_recommender.adversarial import AdversarialAdapter

        if issubclass(model_class, AdversarialAdapter):
            from recbole_mm.trainer.adversarial import AdversarialTrainer

            return AdversarialTrainer
        if issubclass(model_class, MultiTaskRecommender):
            from recbole_mm.trainer.multitask import MultiTaskTrainer

            return MultiTaskTrainer
        if model_type == ModelType.SEQUENTIAL:
            return MMTrainer
    return with_plugin_mixins(recbole_get_trainer(model_type, model_name))
