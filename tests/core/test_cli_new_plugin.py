"""``mux new-plugin NAME``: the skeleton installs, is listed, passes its own tests, mypy, ruff.

The full check builds the skeleton into a private target directory (never
into the shared virtualenv, whose plugin list other tests read) and runs
``mux plugins``, the skeleton's pytest, ``mypy --strict`` and ruff against
it -- for the default skeleton (a transport and a sink) and for each of
``--transport-only``, ``--sink-only`` and ``--processor-only``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mux_core.testing
from mux_core._cli import main
from mux_core._cli.new_plugin import skeleton_files
from mux_core._config.reference import plugin_reference
from mux_core._plugins import PluginManager
from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def test_new_plugin_writes_the_skeleton(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mux-acme-feed"
    assert main(["new-plugin", "acme-feed", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(skeleton_files("acme-feed"))
    assert "mux_acme_feed/transport.py" in written and "tests/test_sink.py" in written
    assert "pip install -e" in out
    pyproject = (target / "pyproject.toml").read_text()
    assert 'acme-feed = "mux_acme_feed"' in pyproject  # the entry point
    assert 'packages = ["mux_acme_feed"]' in pyproject  # no flat-layout guessing
    assert "[build-system]" in pyproject
    assert "class AcmeFeedTransport" in (target / "mux_acme_feed" / "transport.py").read_text()


def test_new_plugin_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["new-plugin", "acme", "--dir", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("name", ["Acme", "1acme", "acme_feed", "acme--feed", "acme-", ""])
def test_new_plugin_refuses_a_bad_name(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", name, "--dir", str(tmp_path / "x")]) == 2
    assert "lower-case letters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["redis", "sse", "discovery", "mux-redis"])
def test_new_plugin_refuses_the_name_of_a_built_in_plugin(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed, mux-redis (package mux_redis, entry point redis) would shadow the
    built-in redis plugin: refused, with why and a name that works."""
    plain = name.removeprefix("mux-")
    assert main(["new-plugin", name, "--dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mux: error: plugin name {plain!r} is taken: a built-in plugin of mux has the entry "
        f"point {plain!r} and the package mux_{plain}, and an installed plugin of this name "
        f"would shadow it; choose another name, e.g. 'acme-{plain}'\n"
    )
    assert not (tmp_path / "x").exists()
    assert main(["new-plugin", f"acme-{plain}", "--dir", str(tmp_path / "y")]) == 0
    assert (tmp_path / "y" / f"mux_acme_{plain}" / "transport.py").exists()


def test_a_leading_mux_is_not_doubled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mux new-plugin mux-nats` writes mux-nats / mux_nats, not mux-mux-nats / mux_mux_nats."""
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "mux-nats"]) == 0
    assert capsys.readouterr().out.startswith("wrote plugin 'nats' in mux-nats:")
    assert [p.name for p in tmp_path.iterdir()] == ["mux-nats"]
    target = tmp_path / "mux-nats"
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(skeleton_files("nats")) == sorted(skeleton_files("mux-nats"))
    assert "mux_nats/transport.py" in written
    pyproject = (target / "pyproject.toml").read_text()
    assert 'name = "mux-nats"' in pyproject
    assert 'nats = "mux_nats"' in pyproject  # the entry point
    assert 'packages = ["mux_nats"]' in pyproject
    assert not [p for p in written if "mux_mux" in p or "mux-mux" in (target / p).read_text()]


def test_config_reference_of_one_plugin() -> None:
    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")
    page = plugin_reference(plugins, "testing")
    assert '### `transport = "scripted"`' in page and '### `type = "collect"`' in page
    assert '| `then` | string | `"hang"` | The step used once the script is exhausted. |' in page
    with pytest.raises(LookupError, match="installed: testing"):
        plugin_reference(plugins, "nope")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


#: ``mux new-plugin`` flags -> what ``mux plugins`` lists, the tests that pass, a key
#: of the config reference.
SKELETONS = {
    "": ("transport acme, sink acme", 3, "| `read_timeout` | number | `30.0` | Seconds without"),
    "--transport-only": ("transport acme", 2, "| `port` | integer | required | The server's TCP"),
    "--sink-only": ("sink acme", 1, "| `path` | string | required | The JSON file written"),
    "--processor-only": ("processor acme", 2, "| `above` | number | required | A warning when"),
}


@pytest.mark.parametrize(
    ("flag", "kinds"),
    [
        ("--transport-only", ["transport"]),
        ("--sink-only", ["sink"]),
        ("--processor-only", ["processor"]),
    ],
)
def test_an_only_flag_writes_that_component_alone(
    flag: str, kinds: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "mux-acme"
    assert main(["new-plugin", "acme", "--dir", str(target), flag]) == 0
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(skeleton_files("acme", kinds))
    modules = [p for p in written if p.startswith("mux_acme/") and p.endswith(".py")]
    assert modules == sorted(["mux_acme/__init__.py", *(f"mux_acme/{k}.py" for k in kinds)])
    assert [p for p in written if p.startswith("tests/")] == [f"tests/test_{kinds[0]}.py"]
    init = (target / "mux_acme" / "__init__.py").read_text()
    hooks = {"transport": "transports", "sink": "sinks", "processor": "processors"}
    for kind, hook in hooks.items():
        assert (f"def mux_register_{hook}(" in init) == (kind in kinds)
    pyproject = (target / "pyproject.toml").read_text()
    assert f'description = "A mux plugin: the acme {kinds[0]}."' in pyproject
    assert ("orjson" in pyproject) == (kinds == ["transport"])  # only the transport parses JSON


def test_the_only_flags_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            ["new-plugin", "acme", "--dir", str(tmp_path / "x"), "--sink-only", "--transport-only"]
        )
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flag", list(SKELETONS))
def test_the_skeleton_installs_is_listed_and_passes_its_own_tests(
    flag: str, tmp_path: Path
) -> None:
    listed_as, passed, reference_row = SKELETONS[flag]
    project = tmp_path / "mux-acme"
    assert main(["new-plugin", "acme", "--dir", str(project), *filter(None, [flag])]) == 0
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "MUX_LOAD_PLUGINS")}
    # A real build (hatchling, from pyproject.toml) installed into a private directory.
    _run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), "."],
        project,
        env,
    )
    env["PYTHONPATH"] = str(site)
    listed = _run([sys.executable, "-m", "mux_core", "plugins"], tmp_path, env).stdout
    rows = [re.split(r"\s{2,}", line.strip()) for line in listed.splitlines()]
    assert ["acme", "0.1.0", listed_as, "ok"] in rows, listed
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, env)
    assert f"{passed} passed" in tests.stdout and "failed" not in tests.stdout
    # The installed copy was tested, not the source folder beside the tests.
    assert (site / "mux_acme" / "py.typed").exists()
    cache = ROOT / ".mypy_cache" / "new-plugin"  # mux_core's part
    mypy = [str(BIN / "mypy"), "--cache-dir", str(cache), "."]
    _run(mypy, project, {k: v for k, v in env.items() if k != "PYTHONPATH"})
    # Its own ruff settings (pyproject.toml): lint and format, as generated.
    _run([str(BIN / "ruff"), "check", "--no-cache", "."], project, env)
    _run([str(BIN / "ruff"), "format", "--no-cache", "--check", "."], project, env)
    reference = _run(
        [sys.executable, "-m", "mux_core", "plugins", "--config-reference", "acme"],
        tmp_path,
        env,
    ).stdout
    assert reference_row in reference
