"""What the web app may read, who may connect, and how long uploads live (``arn_lightning.app.access``, docs/app.md
"What the app may read" and "Exposing it safely"); no gradio needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arn_lightning.app.access import (
    REFUSED,
    AccessError,
    ReadablePaths,
    UploadLimits,
    check_exposure,
    is_local_host,
    parse_credentials,
    prune_uploads,
    read_auth_file,
    upload_files,
)
from arn_lightning.commands import serve

NOW = 1_000_000.0


@pytest.fixture
def started(tmp_path: Path) -> tuple[ReadablePaths, dict[str, Path]]:
    places = {name: tmp_path / name for name in ("runs", "root", "session", "other")}
    for folder in places.values():
        folder.mkdir()
    places["ckpt"] = tmp_path / "model.ckpt"
    places["ckpt"].write_bytes(b"weights")
    (places["other"] / "secret.jsonl").write_text("x" * 1234)
    (places["runs"] / "infer_out").mkdir()
    return ReadablePaths.started_with(places["ckpt"], places["runs"], places["root"]), places


def test_the_app_reads_what_it_was_started_with_and_the_sessions_own_files(started) -> None:
    readable, places = started
    assert readable.check(str(places["ckpt"])) == places["ckpt"].resolve()
    assert readable.check(f"  {places['runs'] / 'infer_out'}  ") == (places["runs"] / "infer_out").resolve()
    assert readable.check(places["root"] / "annotations" / "missing.pkl").name == "missing.pkl"  # inside: its own error
    session_file = places["session"] / "upload_1" / "clip.mp4"
    assert readable.check(session_file, places["session"]) == session_file.resolve()
    with pytest.raises(AccessError):
        readable.check(session_file)  # another session's folder is not readable


def test_every_other_path_gets_one_message_that_says_nothing_about_the_file(started) -> None:
    readable, places = started
    refused = [
        places["other"] / "secret.jsonl",  # exists, 1234 bytes
        places["other"] / "nothing_here.jsonl",  # does not exist
        places["other"],  # a folder
        places["runs"] / ".." / "other" / "secret.jsonl",  # climbs out of --runs
        places["ckpt"].with_name("model.ckpt.bak"),  # next to the checkpoint, not the checkpoint
        "/etc/passwd",
    ]
    link = places["root"] / "escape"
    link.symlink_to(places["other"])  # a link inside --root that leads outside
    refused.append(link / "secret.jsonl")
    messages = set()
    for path in refused:
        with pytest.raises(AccessError) as caught:
            readable.check(path, places["session"])
        messages.add(str(caught.value))
    assert messages == {REFUSED}
    assert "secret" not in REFUSED and "1234" not in REFUSED and "exist" not in REFUSED


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True), ("0.0.0.0", False)]
    + [("::", False), ("192.168.1.20", False), ("example.org", False)],
)
def test_which_hosts_serve_this_machine_only(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_binding_beyond_localhost_needs_a_login_or_the_explicit_flag() -> None:
    assert check_exposure("127.0.0.1", [], False) == "no login (this machine only)"
    with pytest.raises(AccessError, match=r"Expected --auth USER:PASSWORD or --auth-file FILE .*--host 0\.0\.0\.0"):
        check_exposure("0.0.0.0", [], False)
    assert check_exposure("0.0.0.0", [("ana", "pw")], False) == "login required (1 user(s), Gradio's authentication)"
    assert check_exposure("0.0.0.0", [], True).startswith("WARNING: no login, and --host 0.0.0.0 reaches beyond")


def test_serve_refuses_an_exposed_host_without_a_login_before_importing_gradio(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        serve.main(["--host", "0.0.0.0"])
    assert caught.value.code == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err


def test_credentials_from_the_command_line_and_a_file(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# the team\nana:s3cret:with-colon\n\nben:pw\n")
    assert read_auth_file(users) == [("ana", "s3cret:with-colon"), ("ben", "pw")]
    args = serve.build_parser().parse_args(["--auth", "eve:pw2", "--auth-file", str(users)])
    assert serve.credentials(args) == [("eve", "pw2"), ("ana", "s3cret:with-colon"), ("ben", "pw")]
    users.write_text("ana:ok\nben\n")
    with pytest.raises(AccessError, match=r"users\.txt line 2") as caught:
        read_auth_file(users)
    assert "ok" not in str(caught.value).split("users.txt")[1]  # no password repeated
    with pytest.raises(AccessError, match="--auth value 1"):
        parse_credentials(["ana:"], "--auth value {}")
    users.write_text("# nobody\n")
    with pytest.raises(AccessError, match="at least one"):
        read_auth_file(users)


def test_upload_settings_have_their_stated_defaults() -> None:
    args = serve.build_parser().parse_args([])
    assert (args.upload_ttl_minutes, args.max_uploads_mb) == (60.0, 2000)
    assert UploadLimits() == UploadLimits(ttl_seconds=3600.0, max_bytes=2_000_000_000)
    assert (args.auth, args.auth_file, args.allow_unauthenticated) == ([], None, False)


def _file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"u" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_uploads_expire_and_the_oldest_go_first_beyond_the_cap(tmp_path: Path) -> None:
    cache_old = _file(tmp_path / "3f2a" / "old.mp4", 100, 2 * 3600)  # Gradio's cache, 2 hours old
    session_old = _file(tmp_path / "sessions" / "s1" / "upload_1" / "a.mp4", 300, 50 * 60)
    session_new = _file(tmp_path / "sessions" / "s1" / "upload_2" / "b.mp4", 300, 10 * 60)
    cache_new = _file(tmp_path / "9c1d" / "new.mp4", 300, 60)
    result = _file(tmp_path / "sessions" / "s1" / "run_1" / "scene_graphs.jsonl", 5000, 3 * 3600)  # not an upload
    sample = _file(tmp_path / "samples" / "sample.mp4", 5000, 3 * 3600)
    assert sorted(upload_files(tmp_path)) == sorted([cache_old, session_old, session_new, cache_new])
    removed = prune_uploads(tmp_path, UploadLimits(ttl_seconds=3600, max_bytes=650), now=NOW)
    # expired first (2 h > 1 h), then the oldest until 600 <= 650 bytes remain
    assert removed == [cache_old, session_old]
    assert session_new.is_file() and cache_new.is_file() and result.is_file() and sample.is_file()
    assert not (tmp_path / "3f2a").exists() and not (tmp_path / "sessions" / "s1" / "upload_1").exists()
    assert (tmp_path / "sessions" / "s1").is_dir()  # the session's folder stays
    assert prune_uploads(tmp_path, UploadLimits(ttl_seconds=3600, max_bytes=300), now=NOW, keep=[session_new]) == [
        cache_new
    ]
    assert session_new.is_file()  # in use: kept although the cap is reached


def test_upload_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="Expected a positive upload time to live and cap but got 0 s"):
        UploadLimits(ttl_seconds=0)
