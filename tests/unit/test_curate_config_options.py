"""The heuristics / clean_lines / pii / sensitive sections are options dataclasses: parse_config names a bad
value or an unknown key in one line before Ray starts, and valid sections build the stages
they built when the section was passed as keyword arguments."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from curate.clean_lines import DEFAULT_BOILERPLATE, CleanLinesConfig, CleanLinesStage
from curate.config import CurateConfigError, default_config, merge_config, parse_config
from curate.heuristics import DEFAULT_THRESHOLDS, HeuristicsConfig, HeuristicsStage, Thresholds
from curate.pii import PiiConfig, PiiStage
from curate.pipeline import run_settings
from curate.registry import get_spec
from curate.sensitive import DEFAULT_TERMS, SensitiveConfig, SensitiveStage
from schemas.options import OptionsError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("curate*.yaml"))


def config_error(section: str, values: dict) -> str:
    with pytest.raises(CurateConfigError) as info:
        parse_config(merge_config({section: values}))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("section, values, message", [
    ("clean_lines", {"remove_menu_lines": "no"}, "clean_lines.remove_menu_lines: expected true or false, got 'no'"),
    ("clean_lines", {"remove_citations": "false"}, "clean_lines.remove_citations: expected true or false, got 'false'"),
    ("clean_lines", {"require_terminal_punct": 1}, "clean_lines.require_terminal_punct: expected true or false, got 1"),
    ("clean_lines", {"min_words_per_line": "3"}, "clean_lines.min_words_per_line: expected an integer >= 0 or null, got '3'"),
    ("clean_lines", {"min_words_per_line": -1}, "clean_lines.min_words_per_line: expected an integer >= 0 or null, got -1"),
    ("clean_lines", {"min_words_per_line": True}, "clean_lines.min_words_per_line: expected an integer >= 0 or null, got True"),
    ("clean_lines", {"max_word_length": 1.5}, "clean_lines.max_word_length: expected an integer >= 0 or null, got 1.5"),
    # A bare string would be iterated character by character: every line holding an "e" goes.
    ("clean_lines", {"boilerplate": "cookies"}, "clean_lines.boilerplate: expected a list of non-empty strings, got 'cookies'"),
    # An empty notice is a substring of every line.
    ("clean_lines", {"boilerplate": ["cookies", " "]},
     "clean_lines.boilerplate: expected a list of non-empty strings, got ['cookies', ' ']"),
    ("clean_lines", {"boilerplate": ["cookies", 42]},
     "clean_lines.boilerplate: expected a list of non-empty strings, got ['cookies', 42]"),
    ("clean_lines", {"text_column": ""}, "clean_lines.text_column: expected a non-empty string, got ''"),
    ("pii", {"text_column": 5}, "pii.text_column: expected a non-empty string, got 5"),
    ("sensitive", {"terms": "casino"}, "sensitive.terms: expected a list of strings, got 'casino'"),
    ("sensitive", {"terms": ["casino", 1984]}, "sensitive.terms: expected a list of strings, got ['casino', 1984]"),
    ("sensitive", {"terms": {"en": "casino"}}, "sensitive.terms.en: expected a list of strings, got 'casino'"),
    ("sensitive", {"files": "words.txt"}, "sensitive.files: expected a list of non-empty strings, got 'words.txt'"),
    ("sensitive", {"text_column": None}, "sensitive.text_column: expected a non-empty string, got None"),
    ("heuristics", {"text_column": 3}, "heuristics.text_column: expected a non-empty string, got 3"),
    ("heuristics", {"text_column": ""}, "heuristics.text_column: expected a non-empty string, got ''"),
])
def test_bad_value_is_one_line_naming_the_option(section, values, message):
    assert config_error(section, values) == message


@pytest.mark.parametrize("section, key, hint", [
    ("clean_lines", "remove_menu_line", "remove_menu_lines"),
    ("clean_lines", "min_words", "min_words_per_line"),
    ("pii", "text_col", "text_column"),
    ("sensitive", "term", "terms"),
    ("heuristics", "text_colum", "text_column"),
])
def test_unknown_key_is_one_line_naming_it(section, key, hint):
    message = config_error(section, {key: True})
    assert message.startswith(f"{section}: unknown option {key!r} (did you mean {hint!r}?); valid: ")


def test_a_disabled_stage_section_is_not_checked():
    config = parse_config(merge_config({"clean_lines": {"enabled": False, "remove_menu_lines": "no"}}))
    assert not config.enabled("clean_lines")


def test_missing_word_list_is_named_by_parse_config(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=f"^sensitive.files: {missing} does not exist$"):
        parse_config(merge_config({"sensitive": {"files": [str(missing)]}}))


def build(key: str, section: dict):
    """The stage exactly as a pipeline worker builds it from a parsed section."""
    config = parse_config(merge_config({key: section}))
    return get_spec(key).factory(config.stages[key], run_settings(config))()


def test_default_sections_build_the_stages_with_their_old_defaults():
    clean = build("clean_lines", {})
    assert clean.config == CleanLinesConfig()
    assert clean.boilerplate == tuple(s.lower() for s in DEFAULT_BOILERPLATE)
    assert (clean.config.require_terminal_punct, clean.config.min_words_per_line, clean.config.max_word_length,
            clean.config.remove_citations, clean.config.remove_menu_lines, clean.config.text_column) == \
        (False, 0, 1000, True, True, "text")
    assert build("pii", {}).config == PiiConfig(text_column="text")
    sensitive = build("sensitive", {})
    assert sensitive.config == SensitiveConfig(terms=None, files=[])
    assert sensitive.label(DEFAULT_TERMS["en"][0]) == (1, 1.0)


def test_valid_section_builds_the_stage_keyword_construction_builds(tmp_path):
    section = {"boilerplate": ["Read more"], "min_words_per_line": 3, "max_word_length": 12,
               "remove_menu_lines": False, "remove_citations": False, "require_terminal_punct": True}
    worker = build("clean_lines", section)
    assert worker.config == CleanLinesStage(**section).config == CleanLinesStage(section).config
    text = "Read more here.\nOne two three four.\nHome - News - Sport - Music - Film.\nToo short.\nNo period here\nx[1] y z."
    assert worker.clean(text) == ("One two three four.\nHome - News - Sport - Music - Film.\nx[1] y z.", 3)

    words_file = tmp_path / "terms.txt"
    words_file.write_text("badword\n", encoding="utf-8")
    sensitive = build("sensitive", {"terms": {"en": ["zzz"]}, "files": [str(words_file)]})
    assert sensitive.label("zzz and badword") == (2, pytest.approx(2 / 3))

    pii = build("pii", {"text_column": "body"})
    out = pii(pa.table({"id": ["a"], "body": ["mail a@b.org"]})).to_pylist()[0]
    assert (out["body"], out["pii_email_count"]) == ("mail <EMAIL>", 1)


HEURISTICS_TEXT = ("The cat sat on the mat. It was a warm day and the cat was happy.\n"
                   "Home\nHome\n- a list item\n- another one...\n{curly} lorem ipsum")


def test_heuristics_default_section_builds_the_stage_keyword_construction_builds():
    worker = build("heuristics", {})
    assert worker.config == HeuristicsConfig(text_column="text")
    # The default `thresholds:` section only adds rule constants, none of the label parameters.
    assert worker.thresholds == DEFAULT_THRESHOLDS
    table = pa.table({"id": ["a", "b"], "text": [HEURISTICS_TEXT, "短文本。"], "lang": ["en", "zh"]})
    assert worker(table).to_pylist() == HeuristicsStage()(table).to_pylist()


def test_heuristics_section_and_thresholds_reach_the_worker():
    config = parse_config(merge_config({"heuristics": {"text_column": "body"},
                                        "thresholds": {"fineweb_short_line_length": 4}}))
    worker = get_spec("heuristics").factory(config.stages["heuristics"], run_settings(config))()
    assert worker.config.text_column == "body"
    assert worker.thresholds == Thresholds(fineweb_short_line_length=4)
    table = pa.table({"id": ["a"], "text": ["ignored"], "body": [HEURISTICS_TEXT]})
    direct = HeuristicsStage({"fineweb_short_line_length": 4}, text_column="body")(table).to_pylist()[0]
    out = worker(table).to_pylist()[0]
    assert out == direct and out["c4_lorem_ipsum"] and out["gopher_word_count"] > 1


def test_null_keeps_meaning_off_as_before():
    clean = build("clean_lines", {"min_words_per_line": None, "max_word_length": None})
    long_word = "a" * 2000
    assert clean.clean(f"x {long_word}.") == (f"x {long_word}.", 0)
    assert build("sensitive", {"files": None}).config.files == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_sections_build(path):
    from jobs.common import load_config

    config = parse_config(load_config(path, defaults=default_config()))
    for key, options in (("heuristics", HeuristicsConfig), ("clean_lines", CleanLinesConfig), ("pii", PiiConfig),
                         ("sensitive", SensitiveConfig)):
        if config.enabled(key):
            assert isinstance(get_spec(key).factory(config.stages[key], run_settings(config))().config, options)


def test_direct_construction_runs_the_same_checks():
    with pytest.raises(ValueError, match="^clean_lines.remove_menu_lines: expected true or false, got 'no'$"):
        CleanLinesStage(remove_menu_lines="no")
    with pytest.raises(OptionsError, match="^pii: unknown option 'mask_emails'"):
        PiiStage(mask_emails=True)
    with pytest.raises(TypeError, match="not both"):
        SensitiveStage(SensitiveConfig(), terms=["x"])
    with pytest.raises(ValueError, match="^heuristics.text_column: expected a non-empty string, got 3$"):
        HeuristicsStage(text_column=3)
    with pytest.raises(OptionsError, match="^heuristics: unknown option 'text_colum'"):
        HeuristicsStage(text_colum="body")
