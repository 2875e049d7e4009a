"""detectron2's log files hold plain text: no ANSI colour codes.

``default_setup`` logs the config file and the full config highlighted by pygments (installed
here, as in any environment with rich); a project's ``train_net.py`` calls
``plain_text_logs()`` first. Real detectron2 setup and logging, into a real log.txt.
"""

from __future__ import annotations

import argparse
import logging

import pytest

from hfai_runtime.detectron2.logs import PlainText, plain_text_logs


@pytest.mark.detectron2
def test_default_setup_writes_no_colour_codes_after_plain_text_logs(tmp_path):
    pytest.importorskip("pygments", reason="detectron2 highlights only with pygments")
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    config = tmp_path / "config.yaml"
    config.write_text("# a comment pygments colours\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    plain_text_logs()
    plain_text_logs()  # idempotent
    assert sum(isinstance(f, PlainText) for f in logging.getLogger("detectron2").filters) == 1
    default_setup(cfg, argparse.Namespace(config_file=str(config), eval_only=False))
    for handler in logging.getLogger("detectron2").handlers:
        handler.flush()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "# a comment pygments colours" in log and "MAX_ITER: 7" in log
    assert "\x1b" not in log


def test_the_filter_is_not_vacuous():
    record = logging.LogRecord(
        "detectron2", logging.INFO, __file__, 1, "\x1b[38;5;245m%s\x1b[39m", ("\x1b[1mx\x1b[0m",), None
    )
    assert PlainText().filter(record) and record.getMessage() == "x"
