"""Config loading: valid template, and errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from downsize.config import Config, load_config, write_template
from downsize.errors import ConfigError

GOOD = """\
teachers:
  default:
    base_url: http://127.0.0.1:9/v1
    model: m
tasks:
  t:
    instructions: classify
    labels: {a: first, b: second}
"""


def test_template_loads_and_resolves_paths(tmp_path: Path) -> None:
    p = write_template(tmp_path / "downsize.yaml")
    cfg = load_config(p)
    assert cfg.store_url() == f"sqlite:///{(tmp_path / '.downsize/downsize.db').resolve()}"
    assert cfg.home_dir() == (tmp_path / ".downsize").resolve()
    assert set(cfg.tasks["tickets"].labels) == {"billing", "technical", "account"}
    with pytest.raises(ConfigError, match="already exists"):
        write_template(p)


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD.replace("    model: m\n", "    model: m\n    max_retires: 3\n"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:5" in msg and "teachers.default.max_retires" in msg and "unknown key" in msg


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("tasks:\n  t: [unclosed\n  other: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: malformed YAML"):
        load_config(p)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        (("labels: {a: first, b: second}", "labels: {a: only}"), "tasks.t.labels"),
        (("    instructions: classify\n", "    instructions: classify\n    alpha: 1.5\n"), "tasks.t.alpha"),
        (("base_url: http://127.0.0.1:9/v1", "base_url: ftp://x"), "teachers.default.base_url"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, patch: tuple[str, str], key: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD.replace(*patch))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(p)


def test_task_must_name_a_known_teacher(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD + "    teacher: nope\n")
    with pytest.raises(ConfigError, match="'nope', which is not under teachers"):
        load_config(p)


def test_missing_file_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cfg = load_config(p)
    with pytest.raises(ConfigError, match=r"no task 'x' in the config \(tasks: t\)"):
        cfg.task("x")


def test_api_key_is_read_from_the_environment_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD.replace("    model: m\n", "    model: m\n    api_key_env: DS_TEST_KEY\n"))
    monkeypatch.setenv("DS_TEST_KEY", "sk-secret")
    cfg = load_config(p)
    assert cfg.teachers["default"].api_key() == "sk-secret"
    assert "sk-secret" not in repr(cfg) and "sk-secret" not in cfg.model_dump_json()


def test_cost_from_prices() -> None:
    cfg = Config.model_validate({"teachers": {"d": {"base_url": "http://x/v1", "model": "m",
                                                    "price_per_1m_input": 2.5, "price_per_1m_output": 10}}})
    assert cfg.teachers["d"].cost(1_000_000, 100_000) == pytest.approx(3.5)
