"""The package's import rule, read from the source: ``cli`` -> stages -> toolbox, and no stage
imports another stage (lazy imports inside functions count too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monai_t1t2"
ENTRY = {"__init__", "__main__", "cli"}
STAGES = {"qc", "registration", "parcellation", "training", "inference", "evaluation"}
TOOLBOX = {"errors", "hardware", "uncertainty", "io", "dicom", "bids", "progress", "geometry", "masks", "quality", "metrics", "regions", "transforms", "nets", "losses", "viz"}


def _unit(module: str) -> str:
    """``monai_t1t2.inference.batch`` -> ``inference`` (a stage or toolbox module, or a subpackage)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("monai_t1t2")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("monai_t1t2"):
            found.add(node.module)
            if node.module == "monai_t1t2":  # from monai_t1t2 import io
                found |= {f"monai_t1t2.{a.name}" for a in node.names}
    return found


def _package_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("monai_t1t2",) + path.relative_to(PACKAGE).with_suffix("").parts)
        yield path, module.removesuffix(".__init__")


def test_every_module_has_a_layer():
    units = {_unit(module) for _, module in _package_modules()}
    assert units <= ENTRY | STAGES | TOOLBOX, f"unclassified: {sorted(units - ENTRY - STAGES - TOOLBOX)}"
    assert not STAGES & TOOLBOX


def test_stages_import_only_the_toolbox_and_themselves():
    wrong = []
    for path, module in _package_modules():
        unit = _unit(module)
        if unit in ENTRY:
            continue
        for target in _imports(path):
            other = _unit(target)
            if other in ENTRY and target != "monai_t1t2":
                wrong.append(f"{module} -> {target} (the entry points import the stages, not the reverse)")
            elif unit in STAGES and other in STAGES and other != unit:
                wrong.append(f"{module} -> {target} (stage into stage)")
            elif unit in TOOLBOX and other in STAGES:
                wrong.append(f"{module} -> {target} (toolbox into a stage)")
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_a_cross_stage_import(tmp_path):
    """The check above can fail: a stage module that imports another stage is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from monai_t1t2.inference.translation import translate\n")
    assert "monai_t1t2.inference.translation" in _imports(bad)
    assert _unit("monai_t1t2.inference.translation") in STAGES and _unit("monai_t1t2.registration") in STAGES
