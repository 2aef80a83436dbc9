"""``rbm-tune`` in-process (``cli.main``): every ``--help``, ``spaces``, ``--set`` on each command
that takes it, and ``--resume`` of a finished study. No Ray starts, nothing trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rbm_tune.cli import build_parser, main
from rbm_tune.cli_help import subcommands
from rbm_tune.search_space import SHIPPED_DIR, shipped_spaces

ALL_COMMANDS = [(), *(words for words, _ in subcommands(build_parser()))]


def _one_line_error(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbm-tune: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("words", ALL_COMMANDS, ids=lambda w: " ".join(w) or "rbm-tune")
def test_every_help_has_a_description_and_exits_0(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    found = dict(subcommands(parser))
    sub = found[words] if words else parser
    assert sub.description and len(sub.description.split()) >= 5, words
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    # the paragraph is printed, not only the usage line
    assert " ".join(sub.description.split()[:4]) in " ".join(out.split()), out


def test_the_commands_the_issue_named_are_described() -> None:
    found = {" ".join(w) for w in ALL_COMMANDS}
    assert {"best", "datasets", "train", "export", "configs", "spaces", "spaces show"} <= found


def test_spaces_lists_every_shipped_space_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:] if line and line[0] != " "}
    names = [f.removesuffix(".yaml") for f in shipped_spaces()]
    assert [n for n in rows if n in names] == names
    demo = rows["demo"]
    assert demo[1:5] == ["demo", "transductive", "sage", "rbm"]
    assert demo[5] == "8"  # trials
    assert demo[6] == "8" and "params" in demo  # what it searches
    assert rows["arxiv"][1] == "ogbn-arxiv"
    assert rows["cora-family"][1:5] == ["cora", "transductive", "sage", "mlp/moe/rbm"]


def test_spaces_show_prints_the_file_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("cora", "demo.yaml"):
        assert main(["spaces", "show", name]) == 0
        out = capsys.readouterr().out
        assert out == (SHIPPED_DIR / f"{name.removesuffix('.yaml')}.yaml").read_text()


def test_spaces_show_of_an_unknown_name_lists_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["spaces", "show", "corra"]) == 2
    _one_line_error(capsys.readouterr().err, "no shipped space 'corra'", "cora, demo")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--space", "demo", "--set", "distill.max_epoch_s=9"], ["did you mean"]),
        (["--space", "demo", "--set", "distill.max_epochs=x"], ["not an integer"]),
        (["train", "--config", "demo-transductive-sage-rbm", "--set", "distill.lr=0"], ["> 0"]),
        (["train", "--config", "demo-transductive-sage-rbm", "--set", "study.seed=1"], []),
        (["evaluate", "--name", "nostudy", "--set", "distil.lr=0.1"], ["distill.lr"]),
        (["teacher", "--space", "demo", "--set", "teacher.hidden=8"], ["teacher.hidden_dim"]),
        (["plan", "--space", "demo", "--set", "student.k=9"], ["student.k"]),
    ],
)
def test_a_bad_set_is_one_line_naming_it(
    argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    item = argv[argv.index("--set") + 1]
    _one_line_error(capsys.readouterr().err, f"--set {item}", *fragments)


def test_submit_forwards_each_set_to_the_cluster_command() -> None:
    from rbm_tune.jobs import _entrypoint

    args = build_parser().parse_args(
        ["submit", "--space", "demo", "--set", "distill.max_epochs=5", "--set", "seed=2"]
    )
    command = _entrypoint(args, "demo.yaml")
    assert "--set distill.max_epochs=5 --set seed=2" in command


def test_resume_of_a_finished_study_prints_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quick half: the folder's finished.json is what counts; no MLflow store is opened,
    no Ray started (the integration test runs a real study first)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "runs" / "demo"
    folder.mkdir(parents=True)
    (folder / "finished.json").write_text(json.dumps({"trials": 8, "best_trial": "a_00001"}))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["--space", "demo", "--resume", "--storage-path", "runs"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines() == [
        "study 'demo' is already finished (8 trials); nothing to do — see "
        "`rbm-tune best --name demo --storage-path runs`"
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no mlflow.db, nothing


def test_run_study_refuses_to_resume_a_finished_study_before_anything_starts(
    tmp_path: Path,
) -> None:
    """The API's own guard (the CLI checks first): raised before MLflow, data or Ray."""
    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study
    from rbm_tune.study.finished import StudyAlreadyFinished, mark_finished

    (tmp_path / "demo").mkdir()
    mark_finished(tmp_path / "demo", trials=3, best_trial="t_00000")
    with pytest.raises(StudyAlreadyFinished) as done:
        run_study(
            load_space("demo"),
            resume=True,
            storage_path=tmp_path,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
    assert (done.value.name, done.value.trials, done.value.best_trial) == ("demo", 3, "t_00000")
    assert "already finished (3 trials); nothing to do" in str(done.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["demo", "finished.json"]


def test_submit_ships_a_local_warm_start_study_and_forwards_a_name(tmp_path: Path) -> None:
    """A study folder here travels with the job (its trials.json and results.csv); a name the
    does not exist here is passed on for the cluster's storage path."""
    from rbm_tune.jobs import _entrypoint, _ship_warm_start

    earlier = tmp_path / "runs" / "cora-old"
    earlier.mkdir(parents=True)
    (earlier / "trials.json").write_text("[]")
    (earlier / "results.csv").write_text("trial_id\n")
    args = build_parser().parse_args(
        [
            "submit",
            "--space",
            "demo",
            "--warm-start",
            str(earlier / "results.csv"),
            "--warm-start",
            "cora-on-the-cluster",
        ]
    )
    job = tmp_path / "job"
    job.mkdir()
    shipped = _ship_warm_start(args.warm_start, job)
    assert shipped == ["warm-start/0", "cora-on-the-cluster"]
    assert sorted(p.name for p in (job / "warm-start" / "0").iterdir()) == [
        "results.csv",
        "trials.json",
    ]
    command = _entrypoint(args, "demo.yaml", shipped)
    assert "--warm-start warm-start/0 --warm-start cora-on-the-cluster" in command


def test_submit_refuses_a_warm_start_folder_without_a_finished_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "not-a-study"
    empty.mkdir()
    code = main(["submit", "--space", "demo", "--warm-start", str(empty)])
    assert code == 2
    _one_line_error(capsys.readouterr().err, "--warm-start", "trials.json")
