"""The embedded default input: a small, deterministic WARC.gz crawl written by our own
generator, so `python jobs/curate.py` with no --input shows every stage at work.

All text comes from the small word lists below, composed into sentences by a seeded
random generator; no page text is copied from anywhere. The crawl holds:

* article pages with boilerplate (navigation, cookie banner, related links, footer)
  in English, German, French, Spanish, Italian, Chinese and Japanese,
* pages on the made-up domains of `curate/data/blocklist.txt` and URLs with banned
  keywords,
* spammy pages (keyword stuffing, one line repeated), thin pages, boilerplate-only pages,
* near-duplicates (the same article with small edits on other URLs),
* articles carrying e-mail addresses, phone numbers and IP addresses,
* bad records: empty body, binary bytes labelled text/html, invalid UTF-8, wrong
  charset declarations, deeply nested HTML, a 404,
* records the reader must skip and count: requests, revisits, metadata, warcinfo,
  non-HTML responses (PNG, PDF, CSS, JSON).

API: `ensure_sample_crawl(cache_dir) -> Path` (built once, reused);
`write_warc(path, records)` is the small WARC writer tests use too.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

SAMPLE_NAME = "raymill-sample-crawl-v1.warc.gz"
SEED = 20240501
BASE_DATE = datetime(2024, 5, 1, 8, 0, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------- WARC writing

@dataclass
class WarcRecord:
    """One record to write. `body` is the HTTP payload (response) or request bytes."""

    url: str
    body: bytes = b""
    record_type: str = "response"
    content_type: str | None = "text/html; charset=utf-8"
    status: int = 200
    date: datetime = BASE_DATE
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


def _record_id(rec: WarcRecord, index: int) -> str:
    digest = hashlib.sha1(f"{index}|{rec.record_type}|{rec.url}".encode()).hexdigest()
    return f"<urn:uuid:{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}>"


def write_warc(path: str | Path, records: list[WarcRecord], gzip: bool | None = None) -> Path:
    """Write records as a WARC file (gzip per record when the name ends in .gz)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = Path(path)
    use_gzip = path.name.endswith(".gz") if gzip is None else gzip
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=use_gzip)
        for i, rec in enumerate(records):
            warc_headers = {"WARC-Record-ID": _record_id(rec, i),
                            "WARC-Date": rec.date.strftime("%Y-%m-%dT%H:%M:%SZ")}
            if rec.record_type == "response":
                headers = [("Content-Length", str(len(rec.body)))]
                if rec.content_type is not None:
                    headers.insert(0, ("Content-Type", rec.content_type))
                headers += rec.extra_headers
                reason = {200: "OK", 404: "Not Found", 301: "Moved Permanently"}.get(rec.status, "Status")
                http = StatusAndHeaders(f"{rec.status} {reason}", headers, protocol="HTTP/1.1")
                record = writer.create_warc_record(rec.url, "response", payload=io.BytesIO(rec.body),
                                                   length=len(rec.body), http_headers=http,
                                                   warc_headers_dict=warc_headers)
            elif rec.record_type == "request":
                http = StatusAndHeaders(f"GET {rec.url.split('/', 3)[-1] if rec.url.count('/') >= 3 else '/'} HTTP/1.1",
                                        [("Host", rec.url.split("/")[2] if "//" in rec.url else "")],
                                        is_http_request=True)
                record = writer.create_warc_record(rec.url, "request", payload=io.BytesIO(b""), length=0,
                                                   http_headers=http, warc_headers_dict=warc_headers)
            elif rec.record_type == "revisit":
                warc_headers["WARC-Profile"] = "http://netpreserve.org/warc/1.0/revisit/identical-payload-digest"
                warc_headers["WARC-Refers-To-Target-URI"] = rec.url
                record = writer.create_warc_record(rec.url, "revisit", payload=io.BytesIO(b""), length=0,
                                                   warc_headers_dict=warc_headers)
            else:  # metadata / warcinfo / resource: the body is the block
                record = writer.create_warc_record(rec.url, rec.record_type, payload=io.BytesIO(rec.body),
                                                   length=len(rec.body), warc_content_type=rec.content_type or "",
                                                   warc_headers_dict=warc_headers)
            writer.write_record(record)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- word lists (ours)

# Each language: subjects, verbs, objects, modifiers. Sentences are subject-verb-object
# plus a modifier; for zh/ja the pieces join without spaces.
WORDS: dict[str, dict[str, list[str]]] = {
    "en": {
        "s": ["The city council", "Our research team", "A local bakery", "The new library", "Several farmers",
              "The school board", "A young engineer", "The regional museum", "Most residents", "The hiking club",
              "A small startup", "The river authority", "Volunteers from the park", "The transport office"],
        "v": ["has announced", "is testing", "published", "reviewed", "opened", "is planning", "improved",
              "discussed", "presented", "funded", "rebuilt", "measured"],
        "o": ["a plan for cleaner streets", "the results of a two-year study", "a wider bicycle lane",
              "new opening hours", "a guide to seasonal vegetables", "the budget for next spring",
              "a repair schedule for the old bridge", "an exhibition about early printing", "water quality data",
              "a program for first-time readers", "solar panels on public buildings", "a map of quiet footpaths"],
        "m": ["after months of debate.", "with support from neighbours.", "earlier this week.",
              "despite the heavy rain.", "according to a short statement.", "in the northern district.",
              "for the third year in a row.", "before the summer holidays.", "at a crowded public meeting.",
              "without raising local taxes."],
    },
    "de": {
        "s": ["Der Stadtrat", "Unser Forschungsteam", "Eine kleine Bäckerei", "Die neue Bibliothek", "Mehrere Landwirte",
              "Der Wanderverein", "Eine junge Ingenieurin", "Das Heimatmuseum", "Die meisten Anwohner"],
        "v": ["hat vorgestellt", "testet derzeit", "veröffentlichte", "überprüfte", "eröffnete", "plant",
              "verbesserte", "diskutierte"],
        "o": ["einen Plan für sauberere Straßen", "die Ergebnisse einer zweijährigen Studie", "einen breiteren Radweg",
              "neue Öffnungszeiten", "einen Leitfaden für saisonales Gemüse", "den Haushalt für das nächste Frühjahr",
              "Messwerte zur Wasserqualität", "Solaranlagen auf öffentlichen Gebäuden"],
        "m": ["nach monatelanger Diskussion.", "mit Unterstützung der Nachbarn.", "Anfang dieser Woche.",
              "trotz des starken Regens.", "laut einer kurzen Mitteilung.", "im nördlichen Stadtteil.",
              "zum dritten Mal in Folge.", "vor den Sommerferien."],
    },
    "fr": {
        "s": ["Le conseil municipal", "Notre équipe de recherche", "Une petite boulangerie", "La nouvelle bibliothèque",
              "Plusieurs agriculteurs", "Le club de randonnée", "Une jeune ingénieure", "Le musée régional"],
        "v": ["a annoncé", "teste actuellement", "a publié", "a examiné", "a ouvert", "prépare", "a amélioré",
              "a présenté"],
        "o": ["un projet pour des rues plus propres", "les résultats d'une étude de deux ans", "une piste cyclable plus large",
              "de nouveaux horaires d'ouverture", "un guide des légumes de saison", "le budget du printemps prochain",
              "des mesures de la qualité de l'eau", "des panneaux solaires sur les bâtiments publics"],
        "m": ["après des mois de débat.", "avec le soutien des voisins.", "au début de la semaine.",
              "malgré la forte pluie.", "selon un bref communiqué.", "dans le quartier nord.",
              "pour la troisième année consécutive.", "avant les vacances d'été."],
    },
    "es": {
        "s": ["El ayuntamiento", "Nuestro equipo de investigación", "Una pequeña panadería", "La nueva biblioteca",
              "Varios agricultores", "El club de senderismo", "Una joven ingeniera", "El museo regional"],
        "v": ["ha anunciado", "está probando", "publicó", "revisó", "abrió", "está preparando", "mejoró",
              "presentó"],
        "o": ["un plan para calles más limpias", "los resultados de un estudio de dos años", "un carril bici más ancho",
              "un nuevo horario de apertura", "una guía de verduras de temporada", "el presupuesto de la próxima primavera",
              "datos sobre la calidad del agua", "paneles solares en edificios públicos"],
        "m": ["después de meses de debate.", "con el apoyo de los vecinos.", "a principios de esta semana.",
              "a pesar de la fuerte lluvia.", "según un breve comunicado.", "en el distrito norte.",
              "por tercer año consecutivo.", "antes de las vacaciones de verano."],
    },
    "it": {
        "s": ["Il consiglio comunale", "Il nostro gruppo di ricerca", "Una piccola panetteria", "La nuova biblioteca",
              "Molti agricoltori", "Il club escursionistico", "Una giovane ingegnera", "Il museo regionale"],
        "v": ["ha annunciato", "sta provando", "ha pubblicato", "ha esaminato", "ha aperto", "sta preparando",
              "ha migliorato", "ha presentato"],
        "o": ["un piano per strade più pulite", "i risultati di uno studio di due anni", "una pista ciclabile più larga",
              "nuovi orari di apertura", "una guida alle verdure di stagione", "il bilancio della prossima primavera",
              "dati sulla qualità dell'acqua", "pannelli solari sugli edifici pubblici"],
        "m": ["dopo mesi di discussione.", "con il sostegno dei vicini.", "all'inizio di questa settimana.",
              "nonostante la pioggia forte.", "secondo un breve comunicato.", "nel quartiere settentrionale.",
              "per il terzo anno di fila.", "prima delle vacanze estive."],
    },
    "zh": {
        "s": ["市议会", "我们的研究团队", "一家小面包店", "新图书馆", "几位农民", "徒步俱乐部", "一位年轻的工程师", "地方博物馆"],
        "v": ["宣布了", "正在测试", "发布了", "审查了", "开放了", "正在准备", "改进了", "介绍了"],
        "o": ["一项让街道更干净的计划", "一项为期两年的研究结果", "更宽的自行车道", "新的开放时间", "一份时令蔬菜指南",
              "明年春天的预算", "关于水质的测量数据", "公共建筑上的太阳能板"],
        "m": ["经过几个月的讨论，", "在邻居们的支持下，", "本周早些时候，", "尽管下着大雨，", "根据一份简短的声明，",
              "在城市北部，", "连续第三年，", "在暑假之前，"],
    },
    "ja": {
        "s": ["市議会は", "私たちの研究チームは", "小さなパン屋は", "新しい図書館は", "何人かの農家は", "ハイキングクラブは",
              "若いエンジニアは", "地域の博物館は"],
        "v": ["発表しました。", "試験しています。", "公開しました。", "見直しました。", "始めました。", "準備しています。",
              "改善しました。", "紹介しました。"],
        "o": ["きれいな道路のための計画を", "二年間の調査結果を", "広い自転車道を", "新しい開館時間を", "季節の野菜のガイドを",
              "来年春の予算を", "水質の測定データを", "公共施設の太陽光パネルを"],
        "m": ["数か月の議論の末に", "近所の人々の協力で", "今週の初めに", "大雨にもかかわらず", "短い声明によると",
              "市の北部で", "三年連続で", "夏休みの前に"],
    },
}
LANGS = ("en", "de", "fr", "es", "it", "zh", "ja")
TOPICS = ("city", "science", "food", "travel", "culture", "sport", "nature", "transport")
GOOD_SITES = ("dailyharbor.example.com", "northfield-news.example.org", "the-weekly-lens.example.net",
              "blog.riverstone.example.com", "kiezblatt.example.de", "journal-du-canton.example.fr",
              "diario-del-valle.example.es", "gazzetta-locale.example.it", "chengshi-bao.example.cn",
              "machi-shimbun.example.jp")
SITE_BY_LANG = {"en": GOOD_SITES[:4], "de": GOOD_SITES[4:5], "fr": GOOD_SITES[5:6], "es": GOOD_SITES[6:7],
                "it": GOOD_SITES[7:8], "zh": GOOD_SITES[8:9], "ja": GOOD_SITES[9:10]}
BLOCKED_SITES = ("casino-jackpot-royal.example", "www.free-pills-now.example", "promo.hot-singles-nearby.example",
                 "crypto-doubler.example", "files.warez-dump.example", "clickbait-farm.example")


def sentence(rng: random.Random, lang: str) -> str:
    w = WORDS[lang]
    s, v, o, m = rng.choice(w["s"]), rng.choice(w["v"]), rng.choice(w["o"]), rng.choice(w["m"])
    if lang == "zh":
        return f"{m}{s}{v}{o}。"
    if lang == "ja":
        return f"{m}{s}{o}{v}"
    return f"{s} {v} {o} {m}"


def paragraphs(rng: random.Random, lang: str, n: int) -> list[str]:
    sep = "" if lang in ("zh", "ja") else " "
    return [sep.join(sentence(rng, lang) for _ in range(rng.randint(3, 6))) for _ in range(n)]


# ---------------------------------------------------------------- page templates

def _nav(site: str) -> str:
    items = "".join(f'<li><a href="https://{site}/{t}/">{t.title()}</a></li>' for t in TOPICS)
    return f'<header class="site-header"><a class="logo" href="https://{site}/">{site}</a><nav><ul>{items}</ul></nav></header>'


COOKIE_BANNER = ('<div id="cookie-consent" class="cookie-banner"><p>We use cookies to improve your experience. '
                 'By continuing to browse you accept our use of cookies.</p><button>Accept all</button>'
                 '<button>Manage settings</button></div>')


def _footer(site: str) -> str:
    return (f'<footer><p>&copy; 2024 {site}. All rights reserved.</p><ul><li><a href="/privacy">Privacy</a></li>'
            '<li><a href="/terms">Terms of use</a></li><li><a href="/contact">Contact</a></li></ul>'
            '<p>Please enable JavaScript to view the comments.</p></footer>')


def article_html(site: str, lang: str, title: str, paras: list[str], charset: str = "utf-8",
                 extra_html: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paras)
    related = "".join(f'<li><a href="https://{site}/more/{i}">Read more: story {i}</a></li>' for i in range(1, 5))
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{title} | {site}</title>'
            f'<script>window.dataLayer=[];</script><link rel="stylesheet" href="/main.css"></head><body>'
            f'{COOKIE_BANNER}{_nav(site)}<main><article><h1>{title}</h1>'
            f'<p class="byline">Staff reporter, {BASE_DATE:%d %B %Y}</p>{body}{extra_html}</article>'
            f'<aside><h3>Related</h3><ul>{related}</ul></aside></main>{_footer(site)}</body></html>')


def _title(rng: random.Random, lang: str) -> str:
    text = sentence(rng, lang).rstrip(".。")
    if len(text) > 70:
        text = text[:70].rsplit(" ", 1)[0] if " " in text[:70] else text[:70]
    return text


# ---------------------------------------------------------------- the crawl

def build_records(seed: int = SEED) -> list[WarcRecord]:
    """Every record of the sample crawl, in a fixed order."""
    rng = random.Random(seed)
    records: list[WarcRecord] = []
    clock = [0]

    def when() -> datetime:
        clock[0] += 1
        return BASE_DATE + timedelta(minutes=7 * clock[0])

    def add_page(url: str, html: str | bytes, content_type: str | None = "text/html; charset=utf-8",
                 status: int = 200, with_request: bool = False) -> None:
        body = html.encode("utf-8") if isinstance(html, str) else html
        if with_request:
            records.append(WarcRecord(url, record_type="request", date=when()))
        records.append(WarcRecord(url, body, content_type=content_type, status=status, date=when()))

    records.append(WarcRecord("", b"software: raymill sample crawl generator\r\nformat: WARC File Format 1.1\r\n",
                              record_type="warcinfo", content_type="application/warc-fields", date=BASE_DATE))

    # Articles: 40 en, 14 each for the other languages.
    articles: list[tuple[str, str, str, list[str]]] = []
    for lang in LANGS:
        for i in range(40 if lang == "en" else 14):
            site = rng.choice(SITE_BY_LANG[lang])
            topic = rng.choice(TOPICS)
            url = f"https://{site}/{topic}/{2024}/{rng.randint(1, 12):02d}/story-{lang}-{i}"
            title = _title(rng, lang)
            paras = paragraphs(rng, lang, rng.randint(4, 8))
            articles.append((url, site, lang, paras))
            add_page(url, article_html(site, lang, title, paras), with_request=i % 3 == 0)

    # Near-duplicates: 12 English articles re-published elsewhere with small edits.
    for k, (url, site, lang, paras) in enumerate([a for a in articles if a[2] == "en"][:12]):
        edited = list(paras)
        edited[0] = edited[0].replace(" the ", " this ", 1)
        edited.append(sentence(rng, lang))
        mirror = GOOD_SITES[(k + 1) % 4]
        add_page(f"https://{mirror}/syndicated/{k}?src=wire", article_html(mirror, lang, _title(rng, lang), edited))
        if k < 4:  # an exact copy too
            add_page(f"https://{mirror}/amp/{k}", article_html(mirror, lang, _title(rng, lang), paras))

    # PII: articles with e-mails, phone numbers and IP addresses in the text.
    for k in range(16):
        site = GOOD_SITES[k % 4]
        paras = paragraphs(rng, "en", 4)
        user = f"{rng.choice(['anna', 'ben', 'chen', 'dara', 'eli'])}.{rng.choice(['fox', 'lee', 'moss', 'park'])}"
        paras.insert(2, f"For questions write to {user}@{site} or call +1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}.")
        paras.append(f"The outage affected the server at 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)} "
                     f"and the mirror at 10.0.{k}.{rng.randint(1, 254)}; call (555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)} for status.")
        add_page(f"https://{site}/notices/{k}", article_html(site, "en", _title(rng, "en"), paras))

    # Blocked domains and banned URL keywords.
    for k in range(18):
        site = BLOCKED_SITES[k % len(BLOCKED_SITES)]
        add_page(f"http://{site}/offer/{k}", article_html(site, "en", "Win big today", paragraphs(rng, "en", 3)))
    for k in range(4):
        site = GOOD_SITES[k % 4]
        add_page(f"https://{site}/casino-bonus/{k}?sid={rng.randint(10**8, 10**9)}",
                 article_html(site, "en", "Bonus offer", paragraphs(rng, "en", 3)))

    # Spam: keyword stuffing and a repeated line.
    stuffing = "cheap watches best price cheap watches buy now cheap watches free shipping "
    for k in range(10):
        site = f"deals-{k}.shop-hub.example.xyz"
        if k % 2:
            body = "".join(f"<p>{stuffing * rng.randint(3, 6)}</p>" for _ in range(8))
        else:
            line = "Click here to claim your prize now! Limited offer!"
            body = "".join(f"<p>{line}</p>" for _ in range(60))
        add_page(f"http://{site}/p/{k}/{rng.randint(1000, 99999)}?ref=aff&id={k}",
                 f"<html><head><title>Deals</title></head><body>{_nav(site)}<div>{body}</div></body></html>")

    # Thin pages and boilerplate-only pages.
    for k in range(8):
        site = GOOD_SITES[k % 4]
        add_page(f"https://{site}/tag/{k}", f"<html><head><title>Tag</title></head><body>{_nav(site)}"
                 f"<main><h1>Tag {k}</h1><p>No posts yet.</p></main>{_footer(site)}</body></html>")
    for k in range(6):
        site = GOOD_SITES[k % 4]
        add_page(f"https://{site}/consent/{k}", f"<html><head><title>Consent</title></head><body>{COOKIE_BANNER}"
                 f"{_nav(site)}{_footer(site)}</body></html>")

    # Bad records.
    site = GOOD_SITES[0]
    add_page(f"https://{site}/empty", b"")
    add_page(f"https://{site}/binary-as-html", bytes(rng.randrange(256) for _ in range(4096)) + b"\x00" * 64)
    add_page(f"https://{site}/pdf-as-html", b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(2048)))
    bad_utf8 = article_html(site, "en", "Broken bytes", paragraphs(rng, "en", 5)).encode("utf-8")
    cut = bad_utf8.index(b"<p>", 800) + 3
    add_page(f"https://{site}/invalid-utf8", bad_utf8[:cut] + b"caf\xe9 \xff " + bad_utf8[cut:])
    # UTF-8 bytes that claim to be latin-1, and latin-1 bytes that claim to be UTF-8.
    fr_paras = paragraphs(rng, "fr", 5)
    add_page(f"https://{SITE_BY_LANG['fr'][0]}/mauvais-charset",
             article_html(SITE_BY_LANG["fr"][0], "fr", "Été à la campagne", fr_paras, charset="iso-8859-1").encode("utf-8"),
             content_type="text/html; charset=iso-8859-1")
    de_paras = paragraphs(rng, "de", 5)
    add_page(f"https://{SITE_BY_LANG['de'][0]}/falscher-zeichensatz",
             article_html(SITE_BY_LANG["de"][0], "de", "Grüße aus dem Süden", de_paras).encode("latin-1", "replace"),
             content_type="text/html; charset=utf-8")
    add_page(f"https://{site}/deep", "<html><body>" + "<div>" * 5000 + "<p>Deep text.</p>" + "</div>" * 5000 + "</body></html>")
    add_page(f"https://{site}/missing", "<html><body><h1>Not found</h1></body></html>", status=404)
    add_page(f"https://{site}/no-content-type", article_html(site, "en", "Untyped", paragraphs(rng, "en", 4)),
             content_type=None)

    # Records the reader skips and counts.
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(512))
    add_page(f"https://{site}/logo.png", png, content_type="image/png")
    add_page(f"https://{site}/report.pdf", b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(512)),
             content_type="application/pdf")
    add_page(f"https://{site}/main.css", b"body{margin:0}", content_type="text/css")
    add_page(f"https://{site}/api/items.json", b'{"items": []}', content_type="application/json")
    for url, *_ in articles[:5]:
        records.append(WarcRecord(url, record_type="revisit", date=when()))
    for url, *_ in articles[5:8]:
        records.append(WarcRecord(url, b"fetchTimeMs: 120\r\n", record_type="metadata",
                                  content_type="application/warc-fields", date=when()))
    return records


def ensure_sample_crawl(cache_dir: str | Path, seed: int = SEED) -> Path:
    """Path of the sample crawl under cache_dir, generating it on first use."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = SAMPLE_NAME if seed == SEED else SAMPLE_NAME.replace(".warc.gz", f"-seed{seed}.warc.gz")
    path = cache_dir / name
    if path.is_file() and path.stat().st_size > 0:
        return path
    return write_warc(path, build_records(seed))
