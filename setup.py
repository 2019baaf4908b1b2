"""Packaging. Metadata and dependencies are in setup.cfg; this file adds the plugin's YAML defaults.

properties/ stays at the top of the repository, where RecBole users expect it, and is installed as
the data-only packages ``recbole_mm.properties`` and ``recbole_mm.properties.<subfolder>`` through a
``package_dir`` mapping: standard setuptools, declarative, no copy or symlink in the tree and no
custom build command. (Listing the subfolders as packages is what setuptools asks of data folders
inside a package.) A wheel and an sdist thus hold every properties/**/*.yaml (and the example
hyper-parameter search spaces, properties/hyper/*.hyper), the wheel under
recbole_mm/properties/; recbole_mm/resources.py finds the YAML there, or at the top of a checkout.
scripts/wheel_check.sh and tests/test_packaging.py check the wheel.
"""

from setuptools import find_namespace_packages, find_packages, setup

PROPERTIES = ["recbole_mm.properties"] + [
    f"recbole_mm.properties.{name}" for name in find_namespace_packages(where="properties")
]

setup(
    packages=find_packages(include=["recbole_mm", "recbole_mm.*"]) + PROPERTIES,
    package_dir={"recbole_mm.properties": "properties"},
    package_data={name: ["*.yaml", "*.hyper"] for name in PROPERTIES},  # *.hyper: RecBole params files
)
