"""Line cleaning, PII masking and sensitive-word labels on small hand-made tables."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.clean_lines import EMPTY_AFTER_CLEANING, CleanLinesStage
from curate.pii import PiiStage, mask_pii
from curate.sensitive import SensitiveStage

TEXT = ("A real sentence is here.\n"
        "We use cookies to improve your experience.\n"
        "Please enable JavaScript to see comments.\n"
        "The fact[1] is true[edit].\n"
        "heading without punct")


def test_clean_lines_drops_boilerplate_and_citation_markers():
    cleaned, removed = CleanLinesStage().clean(TEXT)
    assert removed == 2
    assert cleaned == "A real sentence is here.\nThe fact is true.\nheading without punct"


def test_clean_lines_optional_terminal_punctuation_and_min_words():
    cleaned, removed = CleanLinesStage(require_terminal_punct=True).clean(TEXT)
    assert removed == 3 and "heading" not in cleaned
    cleaned, removed = CleanLinesStage(min_words_per_line=5).clean("one two three four five.\nshort one.")
    assert (cleaned, removed) == ("one two three four five.", 1)
    # CJK words are characters: a 6-character line has 6 words.
    assert CleanLinesStage(min_words_per_line=5).clean("今天天气很好。")[1] == 0


def test_clean_stage_records_lines_removed_and_drops_emptied_documents():
    table = pa.table({"id": ["a", "b"], "text": [TEXT, "This site uses cookies.\n\n[1]"]})
    out = CleanLinesStage()(table).to_pylist()
    assert out[0]["lines_removed"] == 2 and out[0]["drop_reason"] is None
    assert out[1]["lines_removed"] == 2
    assert out[1]["drop_reason"] == EMPTY_AFTER_CLEANING and out[1]["drop_stage"] == "clean_lines"


@pytest.mark.parametrize("text, masked, counts", [
    ("Mail john.doe@example.com or sales@mail.example.co.uk today.", "Mail <EMAIL> or <EMAIL> today.", (2, 0, 0)),
    ("Server at 192.168.1.20, and 10.0.0.1.", "Server at <IP>, and <IP>.", (0, 2, 0)),
    ("IPv6 2001:db8::8a2e:370:7334 and ::1 here", "IPv6 <IP> and <IP> here", (0, 2, 0)),
    ("Call +44 20 7946 0958 or (555) 123-4567 or 555-123-4567.", "Call <PHONE> or <PHONE> or <PHONE>.", (0, 0, 3)),
    ("手机13812345678，邮箱zhang@example.cn。电话：010-12345678", "手机<PHONE>，邮箱<EMAIL>。电话：<PHONE>", (1, 0, 2)),
    ("東京 03-1234-5678 まで", "東京 <PHONE> まで", (0, 0, 1)),
])
def test_pii_is_masked(text, masked, counts):
    assert mask_pii(text) == (masked, *counts)


@pytest.mark.parametrize("text", [
    "Upgrade to version 1.2.3.4 or v10.0.0.1 now.",
    "Numbers 1.2.3.4.5 and 3.14 and 999.1.1.1 stay.",
    "Meeting at 12:30:45 uses std::vector and a::b.",
    "On 2024-01-15 from 1990-2000, price 1,299.99, id 123456789.",
    "ISBN 978-3-16-148410-0 and the date 2023.10.05 and 15/01/2024.",
    "Write to me at example dot com; population 1 234 567.",
])
def test_pii_leaves_versions_dates_and_numbers_alone(text):
    assert mask_pii(text) == (text, 0, 0, 0)


def test_pii_stage_labels():
    table = pa.table({"id": ["a", "b"], "text": ["ping 8.8.8.8 or a@b.org", "nothing here"]})
    out = PiiStage()(table).to_pylist()
    assert out[0]["text"] == "ping <IP> or <EMAIL>"
    assert (out[0]["pii_email_count"], out[0]["pii_ip_count"], out[0]["pii_phone_count"]) == (1, 1, 0)
    assert (out[1]["pii_email_count"], out[1]["pii_ip_count"], out[1]["pii_phone_count"]) == (0, 0, 0)


def test_sensitive_counts_and_ratio_latin_and_cjk():
    stage = SensitiveStage()
    assert stage.label("casino casino and more text here") == (2, pytest.approx(2 / 6))
    assert stage.label("casinos are not whole-word matches") == (0, 0.0)
    assert stage.label("网上赌博很危险") == (1, pytest.approx(1 / 7))
    assert stage.label("") == (0, 0.0)


def test_sensitive_custom_lists_and_files(tmp_path):
    words_file = tmp_path / "terms.txt"
    words_file.write_text("# my list\nbadword\n\nother term\n", encoding="utf-8")
    stage = SensitiveStage(terms=["zzz"], files=[str(words_file)])
    out = stage(pa.table({"id": ["a"], "text": ["A badword and OTHER TERM and zzz."]})).to_pylist()[0]
    assert out["sensitive_count"] == 3
    assert out["sensitive_ratio"] == pytest.approx(3 / 7)  # 7 words
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        SensitiveStage(files=[str(tmp_path / "missing.txt")])


@pytest.mark.parametrize("line", [
    "搜狐首页 - 新闻 - 体育 - 娱乐 - 财经 - IT - 汽车 - 房产 - 女人 - 短信",  # a portal's channel menu
    "|  |  | 博客首页 \\| 注册新的博客 \\| 控制面板 \\| 博客论坛 \\| 博客分类 |",  # a menu inside a layout cell
    "| 【发表评论】【打印本文】【关闭窗口】 |",  # an article tool bar
    "您现在的位置：读书 -> 连载 -> 畅销小说 -> 纯棉婚姻书摘 -> 正文",  # a breadcrumb
    "Home | News | Sport | Business | Terms of use | Contact us",
])
def test_menu_lines_are_recognised(line):
    from curate.menu_lines import is_menu_line

    assert is_menu_line(line)


@pytest.mark.parametrize("line", [
    "| Pos | Player | Plays | % | Stats |",  # a data table's header row
    "|---|---|---|---|---|",
    "| 2019 | 3.4 | 5.1 | 7.7 | 9.0 |",
    "2019 - 2020 - 2021 - 2022 - 2023",  # numbers, not links
    "The river - a long one - runs through the old town, past the market and the harbour.",
    "记者 - 张三",  # two items: a byline
    "他说：“我们 - 今天 - 明天 - 后天 - 都会来。”",  # items end a sentence
    "state-of-the-art well-known up-to-date one-to-one co-op",  # hyphens without spaces
])
def test_table_rows_sentences_and_hyphenated_text_are_not_menus(line):
    from curate.menu_lines import is_menu_line

    assert not is_menu_line(line)


def test_clean_lines_removes_menu_lines_unless_told_not_to():
    text = "首页 - 新闻 - 体育 - 娱乐 - 财经 - 汽车\n今天的新闻很重要。\n| a | b | c | d | e |"
    assert CleanLinesStage().clean(text) == ("今天的新闻很重要。\n| a | b | c | d | e |", 1)
    assert CleanLinesStage(remove_menu_lines=False).clean(text)[1] == 0
    notice = "网友评论仅供其表达个人看法，并不表明本站同意其观点或证实其描述\n为您推荐 - 推荐 - 娱乐 - 体育 - 财经 - 科技"
    assert CleanLinesStage().clean(notice) == ("", 2)  # a portal page's furniture alone: nothing left
