"""Chinese and Japanese text through the curate stages: per-language thresholds, merged
hard-wrapped lines, CJK sentence ends, layout-table pages, legacy CJK charsets, and CJK
spam that the default rules must still drop. All texts are written here for the tests."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curate.extract import ExtractStage, decode_html
from curate.heuristics import HeuristicsStage, LANGUAGE_THRESHOLDS, Thresholds, document_labels, merge_wrapped_lines
from curate.rules import RuleSet
from curate.words import CJK_CHAR, HANGUL_CHAR, HAN_CHAR, KANA_CHAR, words

CONFIG = Path(__file__).resolve().parents[2] / "curate" / "default_config.yaml"

# A short made-up news story, one sentence per entry.
STORY = [
    "今年春天，河边的小镇决定重新修建那座已经用了六十多年的木桥。",
    "镇政府在三月初召开了居民会议，听取大家对新桥设计的意见。",
    "不少老人希望保留原来的栏杆样式，因为那是他们童年记忆的一部分。",
    "年轻的家长则更关心桥面是否足够宽，能否让婴儿车和自行车同时通过。",
    "设计师最后提出了一个折中方案：桥身使用钢结构，栏杆仍用本地的松木手工制作。",
    "施工预计在六月开始，工期大约四个月，期间渡船会临时恢复运营。",
    "镇上的小学还组织学生画出心目中的新桥，优秀作品将刻在桥头的石碑上。",
    "负责工程的技术员说，新桥至少可以使用一百年，而且抗洪能力比旧桥高得多。",
]


def default_rules() -> RuleSet:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    thresholds = {**Thresholds().as_dict(), **(config.get("thresholds") or {})}
    rules = [r for r in config["filter"]["rules"] if r.get("stage") is None]
    return RuleSet(rules, thresholds)


def judge(texts: list[str], lang: str) -> list[str | None]:
    """First failing default rule per text (None = kept), from the real heuristics stage."""
    table = pa.table({"text": texts, "lang": [lang] * len(texts), "lang_score": [0.99] * len(texts)})
    table = HeuristicsStage()(table)
    return default_rules().failing_rule(table).to_pylist()


def hard_wrap(text: str, width: int) -> str:
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def test_one_cjk_table_for_every_script():
    assert HAN_CHAR.match("桥") and KANA_CHAR.match("の") and KANA_CHAR.match("ｶ") and HANGUL_CHAR.match("한")
    assert CJK_CHAR.match("桥") and CJK_CHAR.match("の") and not CJK_CHAR.match("한")  # Korean uses spaces
    assert words("新桥 한국어 text") == ["新", "桥", "한국어", "text"]


def test_language_thresholds_apply_per_row():
    rules = RuleSet([{"name": "punct", "expr": "fineweb_line_punct_ratio > t.fineweb_min_line_punct_ratio"}],
                    Thresholds().as_dict())
    table = pa.table({"fineweb_line_punct_ratio": [0.11, 0.11, 0.11, 0.11, 0.10],
                      "lang": ["zh", "en", None, "ja", "ja"]})
    # zh 0.106 and ja 0.096 (FineWeb 2) let 0.11 pass; English and unknown use 0.12.
    assert rules.failing_rule(table).to_pylist() == [None, "punct", "punct", None, None]
    # Without a lang column every row gets the default.
    no_lang = pa.table({"fineweb_line_punct_ratio": [0.11]})
    assert rules.failing_rule(no_lang).to_pylist() == ["punct"]
    # A config can override one language's value.
    strict = RuleSet(rules.rules and [{"name": "punct", "expr": rules.rules[0].expr}],
                     {**Thresholds().as_dict(), "fineweb_min_line_punct_ratio@zh": 0.5})
    assert strict.failing_rule(table).to_pylist()[0] == "punct"
    assert LANGUAGE_THRESHOLDS["zh"]["gopher_max_dup_5gram_char_frac"] == 0.198


def test_hard_wrapped_lines_merge_but_menus_stay_unpunctuated():
    wrapped = hard_wrap("".join(STORY), 17)
    lines = wrapped.split("\n")
    merged = merge_wrapped_lines(lines)
    assert len(lines) > 15 and len(merged) < len(lines) / 3, merged
    assert "".join(merged) == "".join(lines)  # nothing lost, only joined
    menu = ["首页", "新闻", "体育", "娱乐", "财经", "汽车", "房产"]
    assert merge_wrapped_lines(menu) == ["".join(menu)]
    labels = document_labels("\n".join(menu * 10), "zh")
    assert labels["fineweb_line_punct_ratio"] == 0.0


def test_hard_wrapped_chinese_article_is_kept():
    # Wrapped at 17 characters, only 2 of 16 lines end in terminal punctuation and most are
    # short; judged on merged lines the article passes.
    article = hard_wrap("".join(STORY), 17)
    raw_lines = article.split("\n")
    assert sum(ln.endswith("。") for ln in raw_lines) / len(raw_lines) <= 0.125
    assert judge([article], "zh") == [None]
    labels = document_labels(article, "zh")
    assert labels["fineweb_line_punct_ratio"] > 0.5 and labels["c4_sentence_count"] == 8


def test_cjk_sentence_ends():
    assert document_labels("他停了下来……然后走了。真的吗？好!", "zh")["c4_sentence_count"] == 4
    # Latin "!" still needs a following space.
    assert document_labels("Yes!No. Go on.", "en")["c4_sentence_count"] == 2


def test_chinese_and_japanese_spam_is_still_dropped():
    stuffing = "便宜手表最低价格立即购买便宜手表免费送货便宜手表限时优惠。" * 12
    repeated_line = "\n".join(["点击这里领取您的大奖！名额有限！"] * 40)
    menu_page = "\n".join(["首页", "新闻中心", "产品展示", "联系我们", "在线留言", "网站地图"] * 8)
    kept_story = "\n".join(STORY)
    reasons = judge([stuffing, repeated_line, menu_page, kept_story], "zh")
    assert all(reason is not None for reason in reasons[:3]), reasons
    assert reasons[3] is None, reasons
    # The repetition labels alone would drop the stuffing and the repeated line too.
    stuffing_labels = document_labels(stuffing, "zh")
    assert stuffing_labels["gopher_dup_5gram_char_frac"] > LANGUAGE_THRESHOLDS["zh"]["gopher_max_dup_5gram_char_frac"]
    assert document_labels(repeated_line, "zh")["gopher_dup_line_frac"] > 0.9
    ja_spam = "\n".join(["今すぐクリックして賞品を受け取ってください！"] * 30)
    assert judge([ja_spam], "ja")[0] is not None


def _raw(html: str, encoding: str = "utf-8") -> pa.Table:
    return pa.table({"id": ["p"], "url": ["https://zh.example/a"], "source": ["t"],
                     "raw": pa.array([html.encode(encoding, "replace")], pa.binary())})


def test_article_in_a_layout_table_keeps_its_paragraphs():
    nav = "".join(f"<td><a href='/{i}'>栏目{i}</a></td>" for i in range(8))
    body = "<br><br>".join(STORY)
    html = (f"<html><head><meta charset='utf-8'><title>新桥</title></head><body>"
            f"<table><tr>{nav}</tr></table>"
            f"<table width='760'><tr><td width='160'>友情链接</td><td><table><tr><td>"
            f"<font size='3'>{body}</font></td></tr></table></td></tr></table></body></html>")
    text = ExtractStage()(_raw(html)).column("text").to_pylist()[0]
    lines = [ln for ln in text.split("\n") if ln.strip()]
    assert "|" not in text
    assert sum(ln.strip() in STORY for ln in lines) >= 6, text
    # Without the unwrapping, the article is one "| ... |" table row.
    flat = ExtractStage({"unwrap_layout_tables": False})(_raw(html)).column("text").to_pylist()[0]
    assert "|" in flat


def test_gb2312_page_with_a_stray_byte_is_not_mojibake():
    html = ("<html><head><meta http-equiv='Content-Type' content='text/html; charset=gb2312'></head><body>"
            + "<p>" + "".join(STORY) + "</p>" + "<!-- " + "x" * 4000 + " --></body></html>")
    raw = html.encode("gb18030")
    cut = raw.index("设计师".encode("gb18030"))
    raw = raw[:cut] + b"\xff" + raw[cut:]  # one invalid byte
    text, charset = decode_html(raw)
    assert charset == "gb18030-replace"
    assert STORY[0] in text and text.count("\ufffd") == 1


@pytest.mark.parametrize("lang", ["zh", "ja"])
def test_language_thresholds_are_published_values(lang):
    # Every override names a real threshold (a typo would silently never apply).
    assert set(LANGUAGE_THRESHOLDS[lang]) <= set(Thresholds.__dataclass_fields__)
