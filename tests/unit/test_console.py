"""Console plumbing of the jobs: the funnel table, Ray's log lines routed to a file, -v."""
from __future__ import annotations

import argparse
import logging

import pytest

from jobs.common import QUIET_LIBRARY_LOGGERS, RAY_LOGGERS, add_config_arguments, format_funnel, log_dir_for, quiet_console
from schemas.funnel import StageCount


@pytest.fixture(autouse=True)
def restore_loggers():
    """quiet_console changes process-wide loggers: put them back for the tests after these."""
    names = RAY_LOGGERS + QUIET_LIBRARY_LOGGERS
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in names}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if h not in handlers:
                logger.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in logger.handlers:
                logger.addHandler(h)
        logger.propagate, logger.level = propagate, level


def test_format_funnel_lists_every_stage_with_counts_reasons_and_seconds():
    stages = [StageCount("read", 10, 8, {"warc_request": 2}, 0.0),
              StageCount("extract", 8, 5, {"extraction_empty": 1, "too_large": 2}, 1.234),
              StageCount("filter", 5, 5, {}, 0.05)]
    lines = format_funnel(stages).splitlines()
    assert lines[0].split() == ["stage", "in", "kept", "dropped", "seconds", "dropped", "by", "reason"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[:5] == ["read", "10", "8", "2", "-"]
    # reasons most frequent first; seconds rounded to a tenth
    assert lines[3].split()[:5] == ["extract", "8", "5", "3", "1.2"]
    assert lines[3].endswith("too_large 2, extraction_empty 1")
    assert lines[4].split() == ["filter", "5", "5", "0", "0.1"]


def test_quiet_console_sends_ray_records_to_the_file_not_the_console(tmp_path, capsys):
    path = quiet_console(tmp_path / "logs")
    logging.getLogger("ray.data.some_operator").info("Execution plan of Dataset xyz")
    logging.getLogger("ray").warning("Token authentication is enabled")
    logging.getLogger("ray").error("a real failure")
    for handler in logging.getLogger("ray").handlers + logging.getLogger("ray.data").handlers:
        handler.flush()
    written = path.read_text(encoding="utf-8")
    assert "Execution plan of Dataset xyz" in written and "Token authentication" in written
    err = capsys.readouterr().err
    assert "Execution plan" not in err and "Token authentication" not in err
    assert "a real failure" in err  # errors still reach the console


def test_verbose_keeps_ray_console_handlers(tmp_path):
    ray_logger = logging.getLogger("ray")
    console = logging.StreamHandler()
    ray_logger.addHandler(console)
    try:
        quiet_console(tmp_path / "logs", verbose=True)
        assert console in ray_logger.handlers
        quiet_console(tmp_path / "logs", verbose=False)
        assert console not in ray_logger.handlers
    finally:
        ray_logger.removeHandler(console)


def test_bitsandbytes_kernel_notice_is_silenced(tmp_path):
    quiet_console(None)
    assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)


def test_every_job_parser_takes_verbose_and_logs_go_beside_a_dataset(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert parser.parse_args(["-v", "a.b=1"]).verbose is True
    assert parser.parse_args([]).verbose is False
    assert log_dir_for(tmp_path / "out" / "curate") == tmp_path / "out" / "curate.logs"
    assert log_dir_for(tmp_path / "runs" / "sft", dataset=False) == tmp_path / "runs" / "sft" / "logs"
