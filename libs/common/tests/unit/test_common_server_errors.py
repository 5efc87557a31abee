"""Every 5xx leaves an ERROR line with its exception; a 4xx answered with a reason does not."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar, get
from litestar.exceptions import NotFoundException
from litestar.testing import TestClient

from restock_common.service import log_server_error


@get("/boom/{item:int}", sync_to_thread=False)
def boom(item: int) -> None:
    raise RuntimeError(f"database said no about {item}")


@get("/missing", sync_to_thread=False)
def missing() -> None:
    raise NotFoundException("no such thing")


def _app() -> Litestar:
    return Litestar([boom, missing], after_exception=[log_server_error], logging_config=None)


def test_a_server_error_is_logged_with_its_route_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="restock_common.service"), TestClient(_app()) as client:
        assert client.get("/boom/7").status_code == 500
    [record] = [r for r in caplog.records if r.name == "restock_common.service"]
    assert record.getMessage() == "request failed"
    assert record.route == "/boom/{item}"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert "database said no about 7" in str(record.exc_info[1])


def test_a_client_error_is_not_logged_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="restock_common.service"), TestClient(_app()) as client:
        assert client.get("/missing").status_code == 404
    assert [r for r in caplog.records if r.name == "restock_common.service"] == []
