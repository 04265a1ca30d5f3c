"""The documents that restate the code: the op schemas in docs/kernel.md, the layout in README.md."""

from __future__ import annotations

import re

from helpers import REPOSITORY


def test_kernel_doc_lists_every_op_schema_as_registered():
    bindings = (REPOSITORY / "instancenorm" / "csrc" / "bindings.cpp").read_text()
    library = bindings[bindings.index("TORCH_LIBRARY(instancenorm, m)") :]
    schemas = ["".join(re.findall(r'"([^"]*)"', call)) for call in re.findall(r"m\.def\((.*?)\);", library, re.S)]
    documented = (REPOSITORY / "docs" / "kernel.md").read_text()
    assert len(schemas) >= 8 and [schema for schema in schemas if schema not in documented] == []


def test_readme_layout_names_every_styler_module():
    readme = (REPOSITORY / "README.md").read_text()
    layout = readme[readme.index("## Repository layout") :]
    modules = [
        path.relative_to(REPOSITORY / "styler").as_posix()
        for path in (REPOSITORY / "styler").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    ]
    assert [module for module in modules if module.rsplit("/", 1)[-1] not in layout] == []
