"""Secrets never reach a log (issue 24, section 1): a URL's password and secret-looking query values are masked in
every text the project makes from a URL: source errors and events, frame keys, the stream command's standard
output and error, weight download errors and logs."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from arn_lightning.redact import mask_url, redact, url_secrets
from arn_lightning.video.files import VideoError, open_frames
from arn_lightning.video.live import SourceError, SourceEvent, open_source
from arn_lightning.weights import download, registry
from net_fixtures import PROXY_VARS
from source_fixtures import Reply, StreamServer, encode, grey, refused_url

SECRET = "PASSWORD"
TOKEN = "t0k3nVALUE"


def _with_credentials(url: str, query: str = "") -> str:
    """``url`` (``http://127.0.0.1:PORT/...``) with ``admin:PASSWORD@`` and an optional query."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://admin:{SECRET}@{rest}{query}"


def _clean(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and TOKEN not in text, text


def _error_text(error: BaseException) -> str:
    """Everything a printed traceback of ``error`` shows (its message, its causes and contexts)."""
    return "".join(traceback.format_exception(error))


# ----------------------------------------------------------------------------------------------------------------------
# the rule


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:PASSWORD@cam.local:554/live", "rtsp://admin:***@cam.local:554/live"),
        ("http://host/live.ts?token=abc123&fps=2", "http://host/live.ts?token=***&fps=2"),
        (
            "https://u:p%40ss@mirror.example/w/?X-Amz-Signature=ff00&X-Amz-Credential=AK&n=1",
            "https://u:***@mirror.example/w/?X-Amz-Signature=***&X-Amz-Credential=***&n=1",
        ),
        (
            "https://h/x?api_key=k1&sig=s2&password=p3&keyframe=7",
            "https://h/x?api_key=***&sig=***&password=***&keyframe=7",
        ),
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),  # nothing secret: unchanged
        ("https://user@host/x", "https://user@host/x"),  # a user name alone is not a secret
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redact_masks_every_url_of_a_text_and_the_secrets_it_quotes_alone() -> None:
    text = (
        "[Errno 111] Connection refused: 'rtsp://admin:PASSWORD@127.0.0.1:9/live' then "
        "http://h/a.ts?access_token=t0k3nVALUE, and <rtmp://x:y0ur-pass@h/app>"
    )
    masked = redact(text)
    assert masked == (
        "[Errno 111] Connection refused: 'rtsp://admin:***@127.0.0.1:9/live' then "
        "http://h/a.ts?access_token=***, and <rtmp://x:***@h/app>"
    )
    # a library message that quotes the password without the URL around it
    quoted = "nonnumeric port: 'PASSWORD@127.0.0.1:9'"
    assert redact(quoted, "http://admin:PASSWORD@127.0.0.1:9/x") == "nonnumeric port: '***@127.0.0.1:9'"
    assert url_secrets("http://a:PASSWORD@h/x?token=t0k3nVALUE&sig=1") == ["PASSWORD", "t0k3nVALUE"]


# ----------------------------------------------------------------------------------------------------------------------
# video sources


def test_an_rtsp_source_that_fails_to_open_never_shows_its_password() -> None:
    port = refused_url().rsplit(":", 1)[1].split("/")[0]
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live"
    with pytest.raises(SourceError) as caught:
        open_source(url, timeout=2.0)
    message = str(caught.value)
    assert "rtsp://admin:***@127.0.0.1" in message and "could not open" in message
    _clean(message, _error_text(caught.value))


def test_an_http_source_that_disconnects_never_shows_its_secrets() -> None:
    data = encode(grey(20))
    with StreamServer([Reply(data[:6000], "close", len(data)), Reply(b"gone", content_length=4, status=404)]) as server:
        url = _with_credentials(server.url, f"?token={TOKEN}&fps=2")
        events: list[SourceEvent] = []
        source = open_source(url, fps=None, reconnect=1, on_event=events.append)
        frames = []
        with pytest.raises(SourceError) as caught:
            for frame in source:
                frames.append(frame)
    assert [e.kind for e in events] == ["disconnect", "reconnect"]
    assert "admin:***@" in events[0].message and "token=***" in events[0].message
    assert frames and all(frame.key.startswith("live.ts/") for frame in frames)
    _clean(*(e.message for e in events), str(caught.value), _error_text(caught.value), repr(source), source.name)


def test_unknown_or_missing_sources_mask_their_secrets(tmp_path: Path) -> None:
    for spec in (f"ftp://me:{SECRET}@h/x", f"gopher://h/x?token={TOKEN}"):
        with pytest.raises(SourceError) as caught:
            open_source(spec)
        _clean(str(caught.value))
    with pytest.raises(VideoError) as caught:  # a URL given where a file is expected: Path() folds its '//'
        open_frames(f"rtsp://admin:{SECRET}@127.0.0.1/live")
    _clean(str(caught.value))
    assert SourceEvent("stall", 3, f"http://a:{SECRET}@h/x: no data").message == "http://a:***@h/x: no data"


# ----------------------------------------------------------------------------------------------------------------------
# weights


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARS, download.OFFLINE_ENV, download.HF_OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)


def test_a_failed_download_from_a_mirror_with_credentials_masks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, online: None
) -> None:
    with StreamServer([Reply(b"gone", content_length=4, status=404)]) as server:
        monkeypatch.setenv(download.MIRROR_ENV, _with_credentials(server.url.rsplit("/", 1)[0] + "/w"))
        monkeypatch.setenv(download.TIMEOUT_ENV, "2")
        with caplog.at_level(logging.INFO), pytest.raises(download.WeightsUnavailable) as caught:
            download.fetch_weights("https://example.invalid/weights/tiny-0123abcd.pth", tmp_path)
    message = str(caught.value)
    assert "admin:***@127.0.0.1" in message and "the download failed" in message
    assert "admin:***@127.0.0.1" in caplog.text
    _clean(message, caplog.text, _error_text(caught.value))
    assert not any(tmp_path.iterdir())


def test_a_failed_download_with_a_token_in_its_url_masks_it(tmp_path: Path, online: None) -> None:
    with StreamServer([Reply(b"gone", content_length=4, status=404)], name="tiny-0123abcd.pth") as server:
        url = f"{server.url}?token={TOKEN}"
        with pytest.raises(download.WeightsUnavailable) as caught:
            download.fetch_weights(url, tmp_path, "tiny-0123abcd.pth", timeout_s=2.0)
        assert server.requests == 1
    message = str(caught.value)
    assert "token=***" in message and "404" in message
    _clean(message)


def test_a_weights_message_through_a_mirror_masks_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(download.MIRROR_ENV, f"https://me:{SECRET}@mirror.example/w?token={TOKEN}")
    entry = registry.get_entry("resnet50-imagenet")
    message = registry.by_hand_message(entry, tmp_path / entry.file_name, "offline")
    assert "me:***@mirror.example" in message
    _clean(message)
