"""The daemon and the operator commands stay apart; the CLI lists and runs the subcommands."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, free_port
from tests.support.stack import run_tool

PACKAGE = REPO_ROOT / "src" / "celery_exporter"


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.append((node, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
    return found


def _daemon_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "tools" not in p.relative_to(PACKAGE).parts)


def test_no_daemon_module_imports_the_tools_package() -> None:
    modules = _daemon_modules()
    assert PACKAGE / "state" / "tracker.py" in modules  # the walk reaches the subpackages
    for path in modules:
        tree = ast.parse(path.read_text())
        for node, name in _imports(tree):
            if "tools" in name.split("."):
                # Only cli.py, and only inside a function (for a subcommand), not at import.
                assert path.name == "cli.py", f"{path} imports {name}"
                assert node not in tree.body, f"cli.py imports {name} at module level"


def test_the_state_package_imports_neither_celery_nor_kombu() -> None:
    # What the mypyc build compiles and the unit tests drive with scripted events: pure code.
    # Importing every module of it, in a fresh interpreter, must load no broker library.
    state = sorted(p.stem for p in (PACKAGE / "state").glob("*.py") if p.stem != "__init__")
    assert "tracker" in state
    imports = "; ".join(f"import celery_exporter.state.{name}" for name in state)
    code = (
        f"import sys; {imports}; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(loaded & {'celery', 'kombu', 'redis', 'amqp'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_subpackage_says_what_it_holds() -> None:
    # The folder names show the architecture; each folder's docstring says its role.
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PACKAGE)} has no docstring"
    for module in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(module.read_text()))
        assert doc, f"{module.relative_to(PACKAGE)} has no docstring"
    # Flat leftovers of the old layout would be shadowed or half-used: none at the top.
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "app.py", "cli.py", "config.py", "logs.py"]


def test_the_daemon_start_up_loads_nothing_from_tools(tmp_path: Path) -> None:
    # Run the real entry point up to the moment the exporter would serve, then list modules.
    code = f"""
import sys
from celery_exporter import app, cli
def report(self):
    print(json_dumps(sorted(m for m in sys.modules if m.startswith("celery_exporter"))))
    raise SystemExit(0)
from json import dumps as json_dumps
app.Exporter.run = report
cli.main(["--broker-url", "redis://127.0.0.1:1/0", "--host", "127.0.0.1",
          "--port", "{free_port()}"])
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "celery_exporter.app" in modules  # the daemon really got this far
    assert not [m for m in modules if m.startswith("celery_exporter.tools")], modules


def test_help_lists_the_subcommands() -> None:
    result = run_tool("--help")
    assert result.returncode == 0
    assert "--broker-url" in result.stdout
    assert "check   Verify the whole monitoring stack." in result.stdout
    assert "report  Task performance report from Prometheus." in result.stdout
    for name in ("check", "report"):
        sub = run_tool(name, "--help")
        assert sub.returncode == 0
        assert f"Usage: celery-exporter {name} [OPTIONS]" in sub.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check"], "nothing to check"),
        (["check", "--prometheus-url", "localhost:9090"], "is not an http(s) URL"),
        (["check", "--broker-url", "nope://x"], "unknown transport 'nope'"),
        (["check", "--prometheus-url", "http://x", "--timeout", "0"], "--timeout"),
        (["check", "--grafana-url", "http://x", "--grafana-credentials-file", "/nonexistent"],
         "cannot read /nonexistent"),
        (["report"], "Missing option '--prometheus-url'"),
        (["report", "--prometheus-url", "http://x", "--since", "yesterday"], "--since"),
        (["report", "--prometheus-url", "http://x", "--start", "20", "--end", "10"],
         "--start must be before --end"),
        (["report", "--prometheus-url", "http://x", "--format", "pdf"], "--format"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run_tool(*args, env={"CE_BROKER_URL": ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"celery-exporter {args[0]}: error: ")
    assert message in result.stderr


def test_unreachable_prometheus_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_tool("report", "--prometheus-url", url, "--since", "1h")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Connection refused" in result.stderr
    assert not result.stdout


def test_check_options_come_from_ce_variables() -> None:
    wrong = f"http://127.0.0.1:{free_port()}"
    result = run_tool(
        "check", env={"CE_PROMETHEUS_URL": wrong, "CE_CHECK_OUTPUT": "json", "CE_BROKER_URL": ""}
    )
    assert result.returncode == 1, result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert [(c["link"], c["status"]) for c in checks if c["status"] != "SKIP"] == [
        ("prometheus", "FAIL")
    ]
