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

SAMPLE_NAME = "raymill-sample-crawl-v2.warc.gz"  # bump when the generator changes
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

# Each language: subjects (s), verbs (v), objects (o), places (p) and times (t). A
# sentence is subject-verb-object with an optional place and time. Every piece is at
# most a few words (CJK: a few characters) and the lists are long enough that five
# words in a row rarely repeat within a page, so real articles pass the Gopher
# repetition rules, as real news text does; zh/ja pieces join without spaces.
WORDS: dict[str, dict[str, list[str]]] = {
    "en": {
        "s": ["The city council", "Our research team", "A local bakery", "The new library", "A farmer",
              "The school board", "A young engineer", "The regional museum", "The harbour master", "The hiking club",
              "A small startup", "The river authority", "A park volunteer", "The transport office", "Two nurses",
              "The youth orchestra", "A retired teacher", "The fire brigade"],
        "v": ["announced", "tested", "published", "reviewed", "opened", "planned", "improved", "discussed",
              "presented", "funded", "rebuilt", "measured", "postponed", "defended", "questioned", "welcomed"],
        "o": ["a cleaner street plan", "the study results", "a wider cycle lane", "new opening hours",
              "a vegetable guide", "the spring budget", "bridge repairs", "a printing exhibition", "water samples",
              "a reading program", "rooftop solar panels", "a footpath map", "the ferry timetable", "a night market",
              "the flood barrier", "tree planting", "a tenant survey", "the bus depot", "a chess tournament",
              "school lunches"],
        "p": ["in the northern district", "near the harbour", "at the town hall", "beside the old mill",
              "across the valley", "on Market Street", "in two villages", "behind the station", "along the river",
              "at the community centre", "in the old quarter", "near the stadium", "on the east bank",
              "outside the library"],
        "t": ["on Monday", "last week", "this morning", "after months of debate", "despite heavy rain",
              "before the holidays", "for the third year", "with support from neighbours", "without new taxes",
              "earlier this spring", "at a public meeting", "late on Friday", "within a few days",
              "during the festival"],
    },
    "de": {
        "s": ["Der Stadtrat", "Unser Forschungsteam", "Eine kleine Bäckerei", "Die neue Bibliothek", "Ein Landwirt",
              "Der Wanderverein", "Eine junge Ingenieurin", "Das Heimatmuseum", "Die Schulleitung",
              "Der Hafenmeister", "Die Verkehrsbehörde", "Ein kleines Startup", "Der Jugendchor", "Eine Lehrerin",
              "Die Feuerwehr", "Der Sportverein", "Die Gemeinde", "Ein Nachbar"],
        "v": ["präsentierte", "veröffentlichte", "überprüfte", "eröffnete", "plante", "verbesserte", "diskutierte",
              "finanzierte", "testete", "verschob", "lobte", "kritisierte", "begrüßte", "erneuerte", "untersuchte",
              "verteidigte"],
        "o": ["einen neuen Radweg", "die Studienergebnisse", "neue Öffnungszeiten", "einen Gemüseratgeber",
              "den Frühjahrshaushalt", "die Brückenreparatur", "eine Druckausstellung", "die Wasserproben",
              "ein Leseprogramm", "die Solaranlagen", "eine Wanderkarte", "den Fährplan", "einen Nachtmarkt",
              "den Hochwasserschutz", "eine Mieterumfrage", "das Busdepot", "ein Schachturnier", "das Schulessen"],
        "p": ["im nördlichen Stadtteil", "am Hafen", "im Rathaus", "an der alten Mühle", "im ganzen Tal",
              "in der Marktstraße", "in zwei Dörfern", "hinter dem Bahnhof", "am Flussufer", "im Gemeindezentrum",
              "in der Altstadt", "beim Stadion", "am Ostufer", "vor der Bibliothek"],
        "t": ["am Montag", "letzte Woche", "heute Morgen", "nach langer Debatte", "trotz starken Regens",
              "vor den Ferien", "zum dritten Mal", "mit Hilfe der Nachbarn", "ohne neue Steuern",
              "in diesem Frühjahr", "bei einer Versammlung", "am späten Freitag", "innerhalb weniger Tage",
              "während des Festes"],
    },
    "fr": {
        "s": ["Le conseil municipal", "Notre équipe", "Une petite boulangerie", "La nouvelle bibliothèque",
              "Un agriculteur", "Le club de randonnée", "Une jeune ingénieure", "Le musée régional",
              "La direction scolaire", "Le capitaine du port", "Le service des transports", "Une jeune entreprise",
              "La chorale des jeunes", "Une enseignante", "La caserne des pompiers", "Le club sportif",
              "La commune", "Un voisin"],
        "v": ["a présenté", "a publié", "a examiné", "a ouvert", "a préparé", "a amélioré", "a discuté",
              "a financé", "a testé", "a reporté", "a salué", "a critiqué", "a accueilli", "a rénové", "a étudié",
              "a défendu"],
        "o": ["une piste cyclable", "les résultats de l'étude", "de nouveaux horaires", "un guide des légumes",
              "le budget du printemps", "la réparation du pont", "une exposition", "des échantillons d'eau",
              "un programme de lecture", "des panneaux solaires", "une carte des sentiers", "l'horaire du bac",
              "un marché nocturne", "la digue", "une enquête locative", "le dépôt de bus", "un tournoi d'échecs",
              "la cantine scolaire"],
        "p": ["dans le quartier nord", "près du port", "à la mairie", "près du vieux moulin", "dans la vallée",
              "rue du Marché", "dans deux villages", "derrière la gare", "le long de la rivière", "au centre social",
              "dans la vieille ville", "près du stade", "sur la rive est", "devant la bibliothèque"],
        "t": ["lundi", "la semaine dernière", "ce matin", "après des mois de débat", "malgré la pluie",
              "avant les vacances", "pour la troisième fois", "avec les voisins", "sans nouvel impôt",
              "ce printemps", "lors d'une réunion", "vendredi soir", "en quelques jours", "pendant la fête"],
    },
    "es": {
        "s": ["El ayuntamiento", "Nuestro equipo", "Una pequeña panadería", "La nueva biblioteca", "Un agricultor",
              "El club de senderismo", "Una joven ingeniera", "El museo regional", "La dirección escolar",
              "El capitán del puerto", "La oficina de transporte", "Una pequeña empresa", "El coro juvenil",
              "Una maestra", "El cuerpo de bomberos", "El club deportivo", "La comunidad", "Un vecino"],
        "v": ["presentó", "publicó", "revisó", "abrió", "preparó", "mejoró", "discutió", "financió", "probó",
              "aplazó", "celebró", "criticó", "recibió", "renovó", "estudió", "defendió"],
        "o": ["un carril bici", "los resultados del estudio", "un nuevo horario", "una guía de verduras",
              "el presupuesto de primavera", "la reparación del puente", "una exposición", "muestras de agua",
              "un programa de lectura", "paneles solares", "un mapa de senderos", "el horario del ferry",
              "un mercado nocturno", "el dique", "una encuesta de inquilinos", "la cochera de autobuses",
              "un torneo de ajedrez", "el comedor escolar"],
        "p": ["en el barrio norte", "cerca del puerto", "en la plaza mayor", "junto al viejo molino", "en el valle",
              "en la calle Mayor", "en dos pueblos", "detrás de la estación", "a lo largo del río",
              "en el centro cívico", "en el casco antiguo", "cerca del estadio", "en la orilla este",
              "frente a la biblioteca"],
        "t": ["el lunes", "la semana pasada", "esta mañana", "tras meses de debate", "a pesar de la lluvia",
              "antes de las vacaciones", "por tercera vez", "con los vecinos", "sin nuevos impuestos",
              "esta primavera", "en una reunión pública", "el viernes por la noche", "en pocos días",
              "durante la fiesta"],
    },
    "it": {
        "s": ["Il consiglio comunale", "Il nostro gruppo", "Una piccola panetteria", "La nuova biblioteca",
              "Un agricoltore", "Il club escursionistico", "Una giovane ingegnera", "Il museo regionale",
              "La direzione scolastica", "Il capitano del porto", "L'ufficio trasporti", "Una piccola azienda",
              "Il coro giovanile", "Una maestra", "La caserma dei pompieri", "La società sportiva", "Il comune",
              "Un vicino"],
        "v": ["ha presentato", "ha pubblicato", "ha esaminato", "ha aperto", "ha preparato", "ha migliorato",
              "ha discusso", "ha finanziato", "ha provato", "ha rinviato", "ha lodato", "ha criticato",
              "ha accolto", "ha rinnovato", "ha studiato", "ha difeso"],
        "o": ["una pista ciclabile", "i risultati dello studio", "nuovi orari", "una guida alle verdure",
              "il bilancio di primavera", "la riparazione del ponte", "una mostra", "campioni d'acqua",
              "un programma di lettura", "pannelli solari", "una mappa dei sentieri", "l'orario del traghetto",
              "un mercato notturno", "l'argine", "un sondaggio tra inquilini", "il deposito degli autobus",
              "un torneo di scacchi", "la mensa scolastica"],
        "p": ["nel quartiere nord", "vicino al porto", "in municipio", "presso il vecchio mulino", "nella valle",
              "in via del Mercato", "in due paesi", "dietro la stazione", "lungo il fiume", "al centro civico",
              "nel centro storico", "vicino allo stadio", "sulla riva est", "davanti alla biblioteca"],
        "t": ["lunedì", "la settimana scorsa", "stamattina", "dopo mesi di dibattito", "nonostante la pioggia",
              "prima delle vacanze", "per la terza volta", "con i vicini", "senza nuove tasse", "questa primavera",
              "durante un'assemblea", "venerdì sera", "in pochi giorni", "durante la festa"],
    },
    "zh": {
        "s": ["市议会", "研究团队", "面包店", "新图书馆", "一位农民", "徒步社", "工程师们", "博物馆", "校董会",
              "港务局", "交通部门", "创业公司", "合唱团", "退休教师", "消防队", "体育协会", "居委会", "一位邻居"],
        "v": ["宣布了", "测试", "发布", "审查了", "开放", "准备", "改进了", "讨论", "资助", "重建了", "推迟",
              "称赞", "批评了", "欢迎", "研究", "提出"],
        "o": ["自行车道", "研究结果", "开放时间", "蔬菜指南", "春季预算", "修桥计划", "印刷展览", "水质数据",
              "阅读项目", "太阳能板", "步道地图", "渡轮时刻", "夜市方案", "防洪堤", "租户调查", "公交车站",
              "象棋比赛", "学校午餐"],
        "p": ["在城北", "在港口附近", "在市政厅", "在老磨坊旁", "在山谷里", "在市场街", "在两个村子", "在车站后面",
              "沿着河边", "在社区中心", "在老城区", "在体育场旁", "在东岸", "在图书馆前"],
        "t": ["周一", "上周", "今天早上", "经过几个月的讨论", "尽管下着大雨", "在假期之前", "连续第三年",
              "在邻居的支持下", "不增加税收", "今年春天", "在公开会议上", "周五晚上", "几天之内", "节日期间"],
    },
    "ja": {
        "s": ["市議会は", "研究チームは", "パン屋は", "新図書館は", "ある農家は", "山岳会は", "技術者は", "博物館は",
              "教育委員会は", "港湾局は", "交通局は", "新興企業は", "合唱団は", "元教師は", "消防署は", "体育協会は",
              "自治会は", "近所の人は"],
        "v": ["発表した", "試験した", "公開した", "見直した", "始めた", "準備している", "改善した", "議論した",
              "支援した", "再建した", "延期した", "評価した", "批判した", "歓迎した", "調べた", "提案した"],
        "o": ["自転車道を", "調査結果を", "開館時間を", "野菜の手引きを", "春の予算を", "橋の修理を", "印刷展を",
              "水質データを", "読書会を", "太陽光パネルを", "散歩道の地図を", "渡し船の時刻表を", "夜市を", "堤防を",
              "住民調査を", "車庫を", "将棋大会を", "給食を"],
        "p": ["北区で", "港の近くで", "市役所で", "古い水車小屋の横で", "谷の村で", "市場通りで", "二つの村で",
              "駅の裏で", "川沿いで", "公民館で", "旧市街で", "競技場の近くで", "東岸で", "図書館の前で"],
        "t": ["月曜日に", "先週", "今朝", "数か月の議論の末", "大雨の中", "休みの前に", "三年連続で", "住民の協力で",
              "増税なしで", "この春", "公開の会合で", "金曜の夜", "数日のうちに", "祭りの間に"],
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


class _Decks:
    """Draw each slot's pieces like cards from a shuffled deck (reshuffled when empty), so
    a page repeats a piece only after using all the others: real articles seldom repeat
    a phrase, and the Gopher repetition rules should pass them."""

    def __init__(self, rng: random.Random, lang: str):
        self.rng, self.words, self.decks = rng, WORDS[lang], {}

    def draw(self, slot: str) -> str:
        deck = self.decks.get(slot)
        if not deck:
            deck = self.decks[slot] = list(self.words[slot])
            self.rng.shuffle(deck)
        return deck.pop()


def sentence(rng: random.Random, lang: str, decks: _Decks | None = None) -> str:
    decks = decks or _Decks(rng, lang)
    s, v, o = decks.draw("s"), decks.draw("v"), decks.draw("o")
    p = decks.draw("p") if rng.random() < 0.5 else ""
    t = decks.draw("t") if rng.random() < 0.5 else ""
    if lang == "zh":
        return f"{t + '，' if t else ''}{s}{p}{v}{o}。"
    if lang == "ja":
        return f"{t + '、' if t else ''}{s}{p}{o}{v}。"
    if t and rng.random() < 0.3:  # a fronted time phrase now and then
        return f"{t[0].upper()}{t[1:]}, {s[0].lower()}{s[1:]} {v} {o}{' ' + p if p else ''}."
    return " ".join(x for x in (s, v, o, p, t) if x) + "."


def paragraphs(rng: random.Random, lang: str, n: int) -> list[str]:
    """n paragraphs of one page. CJK paragraphs are shorter: every character counts as a
    word for the repetition rules, so the same pieces would repeat sooner."""
    decks = _Decks(rng, lang)
    sep, fewest, most = ("", 2, 3) if lang in ("zh", "ja") else (" ", 3, 6)
    return [sep.join(sentence(rng, lang, decks) for _ in range(rng.randint(fewest, most))) for _ in range(n)]


# ---------------------------------------------------------------- page templates

def _nav(site: str) -> str:
    items = "".join(f'<li><a href="https://{site}/{t}/">{t.title()}</a></li>' for t in TOPICS)
    return f'<header class="site-header"><a class="logo" href="https://{site}/">{site}</a><nav><ul>{items}</ul></nav></header>'


# Boilerplate sentences that sit inside the article body itself (extraction keeps them).
INLINE_NOTICES = ("Please enable JavaScript to view the interactive map of this story.",
                  "This website uses cookies to count visitors; see our cookie policy for details.",
                  "Sign up for our newsletter to get the week's local stories.",
                  "Copyright 2024 the publisher. All rights reserved.")

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
            extra = ""
            if lang == "en" and i % 4 == 1:
                # Notices and citation marks inside the article body: extraction keeps
                # them, the C4-style line cleaning removes them.
                paras = list(paras)
                paras[1] = paras[1].rstrip(".") + ".[1]"
                extra = (f"<p>{rng.choice(INLINE_NOTICES)}</p>"
                         f"<p>{sentence(rng, lang)}[2] {sentence(rng, lang)}</p>")
            add_page(url, article_html(site, lang, title, paras, extra_html=extra), with_request=i % 3 == 0)

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

    # Forum threads on ordinary sites whose comments are gambling spam: the URL filter
    # lets them through, the sensitive-content label and rule catch them.
    for k in range(4):
        site = GOOD_SITES[k % 4]
        spam = (f"{rng.choice(['Best', 'Top', 'New'])} online casino bonus, jackpot every hour, sports betting "
                f"tips and a payday loan in minutes. Visit our casino and win the jackpot!")
        paras = paragraphs(rng, "en", 3)
        add_page(f"https://{site}/forum/thread-{k}", article_html(site, "en", _title(rng, "en"), paras + [spam, spam.replace("Visit", "Join")]))

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
