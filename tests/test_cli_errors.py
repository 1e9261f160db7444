"""The CLI's error surface: overrides anywhere on the line, one line per OS failure."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from robustdistiller.cli import build_parser, main, os_error_line, parse_arguments


def test_overrides_may_follow_or_precede_the_options() -> None:
    """`distill --config x --resume optim.total_steps=8` used to be rejected as unrecognised."""
    parser = build_parser()
    args = parse_arguments(parser, ["distill", "optim.lr=1e-4", "--config", "demo", "--resume", "optim.total_steps=8"])
    assert args.resume and args.overrides == ["optim.lr=1e-4", "optim.total_steps=8"]
    with pytest.raises(SystemExit):
        parse_arguments(parser, ["distill", "--config", "demo", "--bogus"])
    with pytest.raises(SystemExit):
        parse_arguments(parser, ["info", "x.ckpt", "a=1"])  # info takes no overrides


def test_os_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    line = os_error_line(OSError(errno.ENOSPC, "No space left on device", "/data/run/states-2.ckpt"))
    assert line == (
        "/data/run/states-2.ckpt: No space left on device: the disk is full: free space or choose another output folder"
    )
    (tmp_path / "f").write_text("x")
    assert "is a file" in os_error_line(FileExistsError(errno.EEXIST, "File exists", str(tmp_path / "f")))


@pytest.mark.parametrize("content", ["train:\n\tout_dir: x\n", "optim:\n  lr: 1\noptim:\n  lr: 2\n"])
def test_bad_yaml_is_one_line(tmp_path: Path, content: str, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "r.yaml").write_text(content)
    assert main(["distill", "--config", str(tmp_path / "r.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'r.yaml'}: ") and err.count("\n") == 1
    assert "line 2" in err or "line 3" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=.inf", "lr must be a finite number"),
        ("train.out_dir=", "out_dir is empty"),
        ("train.device=gpu", "device 'gpu' is not one of"),
    ],
)
def test_bad_values_are_refused(override: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["distill", "--config", "demo", override]) == 1
    assert message in capsys.readouterr().err


def test_project_errors_are_one_line_and_other_exceptions_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A user error (any RobustDistillerError) is one line and exit code 1; a bug, even a
    ValueError, is not dressed up as a user error: it propagates with its traceback."""
    import robustdistiller.commands.info as info
    from robustdistiller.errors import CheckpointFormatError, ConfigError, RobustDistillerError

    for error in (CheckpointFormatError("m.ckpt: weights do not match"), ConfigError("optim.lr: expected float")):

        def fail(args: object, error: RobustDistillerError = error) -> int:
            raise error

        monkeypatch.setattr(info, "run", fail)
        assert main(["info", "m.ckpt"]) == 1
        assert capsys.readouterr().err == f"error: {error}\n"

    def bug(args: object) -> int:
        raise ValueError("internal invariant broken")

    monkeypatch.setattr(info, "run", bug)
    with pytest.raises(ValueError, match="internal invariant broken"):
        main(["info", "m.ckpt"])


def test_every_project_error_is_also_the_builtin_it_replaces() -> None:
    from robustdistiller import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.RobustDistillerError)]
    assert len(classes) >= 8
    for cls in classes:
        assert cls is errors.RobustDistillerError or issubclass(cls, ValueError), cls
