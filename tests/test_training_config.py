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


# The schema: one source for validation, `sentiment train --list-keys` and docs/training-config.md.

import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, fields  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from training.config import DOCS_PAGE, KEYS, ConfigError, config_from_dict, reference_markdown  # noqa: E402


def test_every_key_of_the_config_is_in_the_schema_with_a_description():
    assert [k.name for k in KEYS] == [f.name for f in fields(TrainConfig)]
    defaults = asdict(TrainConfig())
    for k in KEYS:
        assert k.description and "\n" not in k.description, k.name
        assert k.check(defaults[k.name], "default") == defaults[k.name]  # the default is allowed
        for value in k.probe_values():  # and so is every value the config-space checks train
            assert k.check(value, "probe") == value


def test_the_committed_configs_are_within_the_schema():
    from pathlib import Path

    for path in sorted(Path("training").glob("*.toml")):
        if path.name != "tune.toml":  # a search config: sentiment tune reads it
            load_config(path)


@pytest.mark.parametrize(
    ("wrong", "closest"),
    [("embeding_dim", "embedding_dim"), ("ngram", "ngrams"), ("maskunknown", "mask_unknown"),
     ("Max_Tokens", "max_tokens"), ("sequence-length", "sequence_length"), ("quantise", "quantize")],
)  # fmt: skip
def test_an_unknown_key_names_the_closest_valid_one(wrong, closest):
    with pytest.raises(ConfigError, match=f"unknown config key '{wrong}'; did you mean '{closest}'\\?$"):
        config_from_dict({wrong: 1}, "c.toml")


def test_a_key_nothing_resembles_lists_the_keys():
    with pytest.raises(ConfigError, match="unknown config key 'colour'; the keys are name, validation_fraction"):
        config_from_dict({"colour": "red"}, "c.toml")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ngrams", 4, "ngrams must be 1, 2, 3, not 4"),
        ("cleaning", "Basic", 'cleaning must be "full", "tokens", "basic", not "Basic"'),
        ("quantize", "int4", 'quantize must be "none", "int8", not "int4"'),
        ("dropout", 1.0, "dropout must be >= 0.0 and < 1.0, not 1.0"),
        ("sequence_length", 0, "sequence_length must be >= 1 and <= 10_000, not 0"),
        ("max_tokens", 2_000_000, "max_tokens must be >= 10 and <= 1_000_000, not 2_000_000"),
        ("learning_rate", 0, "learning_rate must be > 0.0 and <= 1.0, not 0.0"),
        ("mask_unknown", 1, "mask_unknown must be bool, not int"),
        ("embedding_dim", 8.0, "embedding_dim must be int, not float"),
        ("name", "../x", "name must be a string matching"),
    ],
)
def test_a_value_outside_the_schema_is_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match="^c.toml: " + message.replace("(", r"\(").replace(".", r"\.")):
        config_from_dict({key: value}, "c.toml")


def _allowed(k):
    """Values the schema allows for key ``k``: its choices, or numbers inside its range."""
    if k.choices is not None or k.type is bool:
        return st.sampled_from(k.choices if k.choices is not None else (False, True))
    if k.type is str:
        return st.from_regex(k.pattern, fullmatch=True)
    low = k.minimum if k.minimum is not None else k.above
    high = k.maximum if k.maximum is not None else k.below
    if k.type is int:
        return st.integers(int(low), int(high))
    return st.floats(low, high, exclude_min=k.above is not None, exclude_max=k.below is not None)


# keys that refine a branch: refused (naming the branch) unless those branches are on
NEEDS = {
    "nb_self_training": ("nb_branch",),
    "context_nb_scores": ("nb_branch", "context_branch"),
    "context_bigram_dims": ("context_branch",),
}


def _with_the_branches_they_need(raw: dict) -> dict:
    if raw.get("pooled_branch") is False and not raw.get("context_branch"):
        raw = {**raw, "nb_branch": True}
    for name, branches in NEEDS.items():
        if raw.get(name):
            raw = {**raw, **{b: True for b in branches}}
    return raw


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={k.name: _allowed(k) for k in KEYS}).map(_with_the_branches_they_need))
def test_every_allowed_config_is_accepted(raw):
    assert asdict(config_from_dict(raw, "c.toml")) == {**asdict(TrainConfig()), **raw}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"nb_self_training": 0.5}, "nb_self_training needs nb_branch = true"),
        ({"nb_self_training": 0.5, "context_branch": True}, "nb_self_training needs nb_branch = true"),
        ({"context_nb_scores": True}, "context_nb_scores needs nb_branch = true and context_branch = true"),
        ({"context_nb_scores": True, "nb_branch": True}, "context_nb_scores needs context_branch = true"),
        ({"context_bigram_dims": 300}, "context_bigram_dims needs context_branch = true"),
        ({"pooled_branch": False}, "pooled_branch = false needs another branch: nb_branch or context_branch = true"),
    ],
)
def test_a_key_that_refines_a_branch_is_refused_without_it(raw, message):
    with pytest.raises(ConfigError, match=f"^c.toml: {message}$"):
        config_from_dict(raw, "c.toml")
    assert config_from_dict({**raw, "nb_branch": True, "context_branch": True}, "c.toml")


def _outside(k):
    """Values the schema refuses for key ``k``: the wrong type, or just outside its choices or range."""
    wrong_type = st.just([1]) if k.type is not str else st.just(3)
    if k.choices is not None:
        return st.one_of(wrong_type, st.sampled_from([c for c in ("x", 0, 4, -1) if c not in k.choices]))
    if k.type is bool:
        return st.one_of(wrong_type, st.sampled_from([0, 1, "true"]))
    if k.type is str:
        return st.one_of(wrong_type, st.sampled_from(["", "a b", "../x", "-x"]))
    edges = []
    if k.minimum is not None or k.above is not None:
        edges.append((k.minimum - 1) if k.minimum is not None else k.above)
    if k.maximum is not None or k.below is not None:
        edges.append((k.maximum + 1) if k.maximum is not None else k.below)
    return st.one_of(wrong_type, st.sampled_from([k.type(e) for e in edges]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k.name), _outside(k))))
def test_every_value_outside_the_schema_is_refused_naming_its_key(case):
    name, value = case
    with pytest.raises(ConfigError, match=f"^c.toml: {name} must be "):
        config_from_dict({name: value}, "c.toml")


def test_the_docs_page_is_generated_from_the_schema():
    assert DOCS_PAGE.read_text() == reference_markdown(), "run: python -m training.config --write"
    for k in KEYS:
        assert f"| `{k.name}` |" in DOCS_PAGE.read_text()


def test_list_keys_prints_every_key_with_its_type_allowed_values_and_default(capsys):
    from sentiment.cli import main

    assert main(["train", "--list-keys"]) == 0
    out = capsys.readouterr().out
    for k in KEYS:
        assert f"  {k.name} " in out and k.description in out
    assert 'default "full"; allowed: "full", "tokens", "basic"' in out
    assert "default 500; allowed: >= 1 and <= 10_000" in out


def test_train_refuses_a_bad_config_in_one_line_before_importing_tensorflow(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text('name = "small"\nngrams = 2\nembeding_dim = 8\n')
    code = (
        "import sys; from sentiment.cli import main; "
        f"rc = main(['train', '--config', {str(path)!r}]); print(rc, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr == f"sentiment train: {path}: unknown config key 'embeding_dim'; did you mean 'embedding_dim'?\n"
