import pytest

from training.config import TrainConfig, load_config


def test_committed_configs_load():
    assert load_config("training/seed.toml").name == "seed"


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\nembeding_dim = 8\n')
    with pytest.raises(ValueError, match="unknown config key.*embeding_dim"):
        load_config(path)


def test_wrong_types_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("max_tokens = 'many'\n")
    with pytest.raises(ValueError, match="max_tokens must be int"):
        load_config(path)


def test_ints_are_accepted_for_floats(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("learning_rate = 1\n")
    assert load_config(path) == TrainConfig(learning_rate=1.0)
