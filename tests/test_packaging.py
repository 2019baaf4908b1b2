"""A plain `pip install .` ships the plugin's YAML defaults (properties/ -> recbole_mm/properties/),
and recbole_mm.resources finds them in a checkout or an installed wheel. The full install-and-run
check is scripts/wheel_check.sh (CI)."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from recbole_mm import resources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTIES = os.path.join(REPO, "properties")


def _property_files():
    return sorted(
        os.path.relpath(os.path.join(folder, name), PROPERTIES).replace(os.sep, "/")
        for folder, _, files in os.walk(PROPERTIES) for name in files if name.endswith(".yaml")
    )


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory):
    """File names in a wheel built (offline, no dependencies) from a copy of the package sources."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(os.path.join(REPO, name), src / name)
    for folder in ("recbole_mm", "properties"):
        shutil.copytree(os.path.join(REPO, folder), src / folder, ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.skip(f"pip wheel could not build here: {proc.stderr.strip()[-500:]}")
    wheels = list((tmp / "dist").glob("recbole_mm-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        return set(wheel.namelist()), wheel.read(_entry_points(wheel)).decode()


def _entry_points(wheel):
    return next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))


def test_wheel_holds_every_yaml_under_recbole_mm_properties(wheel_names):
    names, _ = wheel_names
    expected = _property_files()
    assert "overall.yaml" in expected and any(p.startswith("model/") for p in expected)
    missing = [p for p in expected if f"recbole_mm/properties/{p}" not in names]
    assert not missing, f"YAML missing from the wheel: {missing}"
    assert not any(n.startswith("properties/") for n in names)  # nothing at the top of site-packages


def test_wheel_has_the_command_line(wheel_names):
    names, entry_points = wheel_names
    assert {"recbole_mm/__main__.py", "recbole_mm/resources.py", "recbole_mm/cli.py"} <= names
    assert "recbole-mm = recbole_mm.__main__:console" in entry_points


def test_properties_dir_in_a_checkout():
    assert os.path.realpath(resources.properties_dir()) == os.path.realpath(PROPERTIES)
    for parts in (("overall.yaml",), ("model", "ANT.yaml"), ("dataset", "mm_synthetic.yaml"),
                  ("preprocess", "amazon_scientific.yaml")):
        assert os.path.isfile(resources.plugin_yaml(*parts)), parts


def test_installed_place_wins_and_a_missing_one_is_named(tmp_path, monkeypatch):
    installed, checkout = tmp_path / "site" / "recbole_mm" / "properties", tmp_path / "repo" / "properties"
    monkeypatch.setattr(resources, "CANDIDATES", (str(installed), str(checkout)))
    with pytest.raises(FileNotFoundError) as error:
        resources.properties_dir()
    assert str(installed) in str(error.value) and str(checkout) in str(error.value)
    for folder in (checkout, installed):
        folder.mkdir(parents=True)
        (folder / "overall.yaml").write_text("{}\n")
        assert resources.properties_dir() == str(folder)  # the checkout alone, then the wheel first
    assert resources.plugin_yaml("model", "ANT.yaml") == os.path.join(str(installed), "model", "ANT.yaml")
