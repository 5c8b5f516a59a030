"""Config files and sweep specs read numbers as the command line does (YAML 1.1 alone reads 1e-3 as a string)."""

import pytest

from optimlab.config import load_config, load_config_file
from optimlab.errors import ConfigError
from optimlab.sweep.spec import load_spec_file


@pytest.mark.parametrize("written, value", [("1e-3", 1e-3), ("1E6", 1e6), (".5", 0.5), ("3.0e-4", 3e-4), ("2", 2)])
def test_config_file_numbers_equal_the_command_line(tmp_path, written, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  name: sgd\n  lr: {written}\n")
    from_file = load_config_file(path)
    assert from_file.optim.kwargs["lr"] == value
    assert from_file == load_config(["optim=sgd", f"optim.lr={written}"])


def test_sweep_spec_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: {task: toy}\ngrid:\n  optim.lr: [1e-3, 1E-2, .5]\n")
    spec = load_spec_file(path)
    assert [point["optim.lr"] for point in spec.points] == [1e-3, 1e-2, 0.5]


@pytest.mark.parametrize(
    "content, message",
    [
        ("optim: {lr: !!python/object:os.system ls}", "is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("optim: [", "is not valid YAML"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        load_config_file(path)
    assert "\n" not in str(error.value)


def test_directories_and_binary_files_are_not_config_files(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config_file(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="is not a text file"):
        load_config_file(binary)
