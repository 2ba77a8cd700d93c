from __future__ import annotations

from medfm.methods.srrg.structured import (
    StructuredReport,
    parse_findings,
    parse_impression,
    parse_structured,
    render,
    validate_structured,
)

GOOD = """Findings:
Lungs and Airways:
- No focal consolidation.
- Minimal left basilar atelectasis.

Pleura:
- No pleural effusion.

Impression:
1. Minimal left basilar atelectasis.
2. No pleural effusion."""


def test_roundtrip_valid_report():
    assert validate_structured(GOOD) == []
    rep = parse_structured(GOOD)
    assert rep.findings == {
        "Lungs and Airways": ["No focal consolidation.", "Minimal left basilar atelectasis."],
        "Pleura": ["No pleural effusion."],
    }
    assert rep.impression == ["Minimal left basilar atelectasis.", "No pleural effusion."]
    assert render(rep) == GOOD
    assert len(rep.utterances()) == 5


def test_renderer_orders_headers():
    rep = StructuredReport(findings={"Pleura": ["No effusion."], "Lungs and Airways": ["Clear."]}, impression=["Ok."])
    assert render(rep).index("Lungs and Airways:") < render(rep).index("Pleura:")


def test_every_deviation_reported():
    text = """Findings:
- orphan bullet
Lungs and Airways:
- No focal consolidation.
Heart is big
Cardiac:
Pleura:

Impression:
1. A.
3. B.
C without number"""
    codes = [p.code for p in validate_structured(text)]
    for code in ("bullet_before_header", "stray_line", "section_discarded", "unknown_header", "empty_section",
                 "numbering_gap", "not_numbered"):  # fmt: skip
        assert code in codes, code
    rep = parse_structured(text)
    assert rep.findings == {}  # Lungs discarded after the stray line, Pleura empty
    assert rep.impression == ["A.", "B.", "C without number"]


def test_structeval_parsers():
    f, warns = parse_findings("Findings:\nPleura:\n- x\n\n- Lungs and Airways:\n- y", do_lower_case=False)
    assert f == {"Pleura": ["x"], "Lungs and Airways": ["y"]} and any("Findings" in w for w in warns)
    assert parse_impression("1. A\n2. B") == ["A", "B"]


def test_empty_and_missing_sections():
    assert [p.code for p in validate_structured("")] == ["empty_report"]
    codes = [p.code for p in validate_structured("Impression:\n1. A.", require=("findings", "impression"))]
    assert codes == ["missing_findings"]
