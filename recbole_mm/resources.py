"""Where the plugin's YAML defaults (``properties/``) are: in an installed wheel or in a checkout.

The YAML lives at the top of the repository (``properties/overall.yaml``, ``properties/model/``,
``properties/dataset/``, ``properties/preprocess/``), where RecBole users look for it. setup.py
installs that folder as ``recbole_mm/properties/`` (package data), so:

- installed wheel: ``<site-packages>/recbole_mm/properties/``
- checkout (plain ``python -m pytest`` in the repository, or ``pip install -e .``):
  ``<repository>/properties/``, beside ``recbole_mm/``

The installed place is tried first: in a wheel install the folder beside the package is
site-packages itself, where another distribution's stray top-level ``properties/`` must never win.
Paths come from ``__file__``, not from ``importlib.resources``: RecBole's Config reads YAML by path,
and in a checkout ``recbole_mm.properties`` is no importable package.
"""

from __future__ import annotations

import os

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CANDIDATES = (
    os.path.join(_PACKAGE_DIR, "properties"),  # installed wheel
    os.path.join(os.path.dirname(_PACKAGE_DIR), "properties"),  # checkout
)


def properties_dir() -> str:
    """The folder that holds ``overall.yaml``, ``model/``, ``dataset/`` and ``preprocess/``."""
    for path in CANDIDATES:
        if os.path.isfile(os.path.join(path, "overall.yaml")):
            return path
    raise FileNotFoundError(
        "recbole_mm's YAML defaults (properties/overall.yaml) are missing: looked in "
        + " and ".join(CANDIDATES)
        + ". Reinstall the package (pip install .) or run from a complete checkout."
    )


def plugin_yaml(*parts: str) -> str:
    """Path of one plugin YAML file, e.g. ``plugin_yaml("model", "ANT.yaml")`` (it may not exist:
    a model or data set without defaults of its own has no file)."""
    return os.path.join(properties_dir(), *parts)
