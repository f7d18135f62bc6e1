"""The command line: arguments reach the commands, and bad input is a one-line error."""

import json

from routeiq_training.cli import main, parser


def test_train_parity_and_eval_from_the_command_line(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    out = tmp_path / "artifacts"
    assert main(["train", "--data", data, "--llm-data", llms, "--out", str(out),
                 "--strategies", "elo,smallest", "--dim", "64"]) == 0
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps(["hello", ""]))
    assert main(["parity", "--artifact", str(out / "smallest"), "--queries", str(queries),
                 "--out", str(tmp_path / "expected.json")]) == 0
    rows = json.loads((tmp_path / "expected.json").read_text())
    # smallest: -size_b; the three 7B models tie, the choice rule takes the cheaper, then
    # the lower index: codegemma-7b (index 0)
    assert rows[0]["scores"][0] == -7.0 and rows[0]["choice"] == 0
    assert main(["eval", "--data", data, "--llm-data", llms, "--artifacts", str(out),
                 "--out", str(tmp_path / "report")]) == 0
    assert "| elo | - |" in capsys.readouterr().out


def test_errors_name_the_problem(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["train", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--strategies", "knn,routellm"]) == 1
    assert "unknown strategy 'routellm'" in capsys.readouterr().err
    assert main(["parity", "--artifact", str(tmp_path), "--queries", data,
                 "--out", str(tmp_path / "x.json")]) == 1
    assert "expected a JSON list of strings" in capsys.readouterr().err


def test_the_default_featurizer_is_the_one_select_chose():
    """`train` and `robust-eval` default to the featurizer `select` chose on validation
    folds (README, "Choosing the default on validation folds"); `select` lists it among
    its candidates."""
    from routeiq_training.selection import DEFAULT_FEATURIZERS

    args = ["--data", "d", "--llm-data", "l", "--out", "o"]
    for command in ("train", "robust-eval"):
        assert parser().parse_args([command, *args]).featurizer == \
            "hashed-ngram+minilm+structure"
    assert "hashed-ngram+minilm+structure" in DEFAULT_FEATURIZERS
