"""The package lives at the top level (``metajudge/``), and the tests import the installed one."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import metajudge

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_is_the_top_level_folder_and_no_stray_copy_exists() -> None:
    assert Path(metajudge.__file__).resolve() == ROOT / "metajudge" / "__init__.py"
    assert not (ROOT / "src").exists()


def test_the_installed_distribution_is_this_checkout() -> None:
    dist = metadata.distribution("metajudge")
    direct = dist.read_text("direct_url.json")
    if direct is None:  # a regular (non-editable) install: its files hold the package
        located = Path(str(dist.locate_file("metajudge/__init__.py"))).resolve()
        assert located == Path(metajudge.__file__).resolve()
        return
    info = json.loads(direct)
    assert info.get("dir_info", {}).get("editable") is True
    assert Path(info["url"].removeprefix("file://")).resolve() == ROOT
