"""The embedded default quality classifier: trained on first use from data the project has.

DCLM's classifier learns "reads like text someone wrote for a reader" (instruction data,
reference answers) against "reads like raw web pages". The project's stand-ins:
- positive (`hq`): fluent paragraphs in seven languages from the sample crawl's text
  generator (seeded apart from the crawl) and, where the repository has them, the
  instructions and answers of the synthesis seed tasks (synth/default_seeds.json, read
  as a data file: curate does not import synth);
- negative (`lq`): page furniture and spam composed from the same generator's templates
  (navigation menus, cookie banners, footers, "read more" lists, empty tag pages,
  keyword stuffing, prize and casino spam) and Chinese portal boilerplate of the kind
  issue 16 found extraction taking instead of the article.
It is a demonstration default: a real run trains its own with `jobs/quality.py train`.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from curate.quality import POSITIVE_LABEL

EMBEDDED_KEYWORD = "embedded"
DEFAULT_VERSION = 1  # bump when the data or options change: cached copies rebuild
NEGATIVE_LABEL = "lq"
CORPUS_SEED = 7_000_002
SEEDS_FILE = Path(__file__).resolve().parents[1] / "synth" / "default_seeds.json"

_PORTAL_LINES = ("网友评论仅供其表达个人看法，并不表明本站同意其观点或证实其描述", "为您推荐", "推荐阅读", "相关新闻",
                 "责任编辑", "返回首页", "分享到微信朋友圈", "本网站使用cookie", "版权所有 未经授权禁止转载",
                 "关注我们的公众号", "点击查看更多", "上一篇 下一篇", "利用規約", "プライバシーポリシー",
                 "この記事をシェアする", "関連記事", "ランキング")
_SPAM_WORDS = ("cheap", "watches", "best", "price", "buy", "now", "free", "shipping", "deal", "discount",
               "casino", "bonus", "jackpot", "win", "click", "here", "offer", "limited", "prize", "loan")


def positive_texts(rng: random.Random, n_paragraphs: int = 60) -> list[str]:
    from curate.sample_crawl import LANGS, paragraphs

    texts = [p for lang in LANGS for p in paragraphs(rng, lang, n_paragraphs)]
    if SEEDS_FILE.is_file():
        for task in json.loads(SEEDS_FILE.read_text(encoding="utf-8")):
            for instance in task.get("instances") or [{}]:
                parts = [task.get("instruction", ""), instance.get("input", ""), instance.get("output", "")]
                texts.append(" ".join(p for p in parts if p))
    return texts


def negative_texts(rng: random.Random, n: int = 500) -> list[str]:
    from curate.sample_crawl import GOOD_SITES, INLINE_NOTICES, TOPICS

    def furniture() -> str:
        site = rng.choice(GOOD_SITES)
        pieces = [
            lambda: " ".join(t.title() for t in rng.sample(TOPICS, len(TOPICS))),
            lambda: "We use cookies to improve your experience. By continuing to browse you accept our use of cookies. "
                    "Accept all Manage settings",
            lambda: f"© 2024 {site}. All rights reserved. Privacy Terms of use Contact",
            lambda: rng.choice(INLINE_NOTICES),
            lambda: " ".join(f"Read more: story {rng.randint(1, 40)}" for _ in range(rng.randint(2, 5))),
            lambda: f"Tag {rng.randint(0, 99)} No posts yet.",
            lambda: " ".join(rng.choice(_SPAM_WORDS) for _ in range(rng.randint(8, 30))),
            lambda: "Click here to claim your prize now! Limited offer! " * rng.randint(1, 4),
            lambda: "Best online casino bonus, jackpot every hour, sports betting tips and a payday loan in minutes.",
            lambda: " ".join(rng.sample(_PORTAL_LINES, rng.randint(2, 5))),
            lambda: f"Home › {rng.choice(TOPICS).title()} › Page {rng.randint(1, 9)} Next » Login Register Search",
        ]
        return " ".join(rng.choice(pieces)() for _ in range(rng.randint(1, 4)))

    return [furniture() for _ in range(n)]


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYMILL_CACHE", Path.home() / ".cache" / "raymill")).expanduser()


def embedded_quality_classifier(cache_dir: str | Path | None = None) -> Path:
    """Path of the default quality classifier (.bin), trained on first use (about a second)."""
    from curate.classifier import TrainOptions, train_classifier

    path = Path(cache_dir or default_cache_dir()) / f"quality-classifier-v{DEFAULT_VERSION}.bin"
    if not path.is_file():
        rng = random.Random(CORPUS_SEED)
        examples = [(t, POSITIVE_LABEL) for t in positive_texts(rng)] + [(t, NEGATIVE_LABEL) for t in negative_texts(rng)]
        train_classifier(examples, path, TrainOptions(bucket=50_000, dim=16),
                         sources={POSITIVE_LABEL: ["curate.sample_crawl.paragraphs", str(SEEDS_FILE)],
                                  NEGATIVE_LABEL: ["curate.quality_default.negative_texts"]})
    return path
