import stepgraph as sg
import stepgraph._core as core


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in dir(sg) if not name.startswith("_")}
    public -= {"demo", "agents", "testing"}  # modules: stepgraph.demo, stepgraph.agents, ...
    assert set(sg.__all__) == public
    assert sg.__all__ == sorted(sg.__all__, key=lambda n: (n[0].islower(), n))


def test_every_export_is_defined() -> None:
    for name in sg.__all__:
        assert getattr(sg, name) is not None, name
    for name in core.__all__:
        assert hasattr(core, name), name


def test_importing_stepgraph_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stepgraph; "
        "print(sorted(m for m in ('pydantic', 'argparse', 'ray', 'typer', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
