"""selfsup's messages (selfsup.log): on stdout where nobody configured logging, routed by the application's
own configuration where it did."""

from __future__ import annotations

import logging

from selfsup.log import console, logger


def test_messages_show_on_stdout_inside_console_only(capsys):
    with console():
        logger.info("budget 3m: planned 417 steps")
    logger.info("outside: not shown")
    out = capsys.readouterr().out
    assert out == "budget 3m: planned 417 steps\n"
    assert not logger.handlers and logger.level == logging.NOTSET and logger.propagate  # left as it was


def test_an_applications_logging_decides(capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="selfsup"):  # the application wants warnings only
        with console():
            logger.info("budget 3m: planned 417 steps")
    assert capsys.readouterr().out == "" and "planned" not in caplog.text
    own = logging.StreamHandler()  # or routes them itself: console leaves the logger alone
    logger.addHandler(own)
    try:
        with console():
            assert logger.handlers == [own] and logger.propagate
    finally:
        logger.removeHandler(own)
