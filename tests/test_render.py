"""The report's views: natural-language text at three depths, the rich terminal view and the HTML page."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import pytest
from rich.console import Console

from sagenano.inverse.render import render_html, render_text, show
from sagenano.inverse.render.words import DEPTHS
from sagenano.inverse.report import (
    Alternative,
    Claim,
    DecisionPoint,
    DependencyScore,
    OwnExplanation,
    Report,
    SpanRef,
    Step,
    TokenRecord,
    Validation,
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CHAIN = "3 + 4 = 7<|answer|>7"
REFUTED_SPAN = "How many apples"


def _dependency(question: str, text: str, significance: float, share: float) -> DependencyScore:
    start = question.index(text)
    kind = "number" if text.isdigit() else "text"
    span = SpanRef(
        source="question", step=None, start=start, end=start + len(text), text=text, kind=kind, positions=[start // 4]
    )
    return DependencyScore(span=span, significance=significance, share=share, attention=0.2, gradient=0.05)


def make_report(question: str = QUESTION, decisions: bool = True, validation: bool = True) -> Report:
    """A two-step report as `explain` would write it for the apples question."""
    pieces = ["3", " +", " 4", " =", " 7", "<|answer|>", "7"]
    step_of = [0, 0, 0, 0, 0, None, 1]
    tokens = [
        TokenRecord(index=i, id=10 + i, token=t, prob=0.55 if i == 1 else 0.95, entropy=0.1, step=step_of[i])
        for i, t in enumerate(pieces)
    ]
    first = Step(
        index=0, text="3 + 4 = 7", token_start=0, token_end=5, confidence=0.86, min_prob=0.55, entropy=0.18,
        meta_confidence=0.9,
        dependencies=[
            _dependency(question, "3", 0.0123, 0.48),
            _dependency(question, "4", 0.0105, 0.41),
            _dependency(question, REFUTED_SPAN, 0.0028, 0.11),
        ],
    )  # fmt: skip
    from_step = SpanRef(source="step", step=0, start=8, end=9, text="7", kind="number", positions=[24])
    answer = Step(
        index=1, text="7", token_start=6, token_end=7, confidence=0.97, min_prob=0.97, entropy=0.04, is_answer=True,
        dependencies=[
            DependencyScore(span=from_step, significance=0.02, share=0.8, attention=0.4, gradient=0.06),
            _dependency(question, "apples", 0.005, 0.2),
        ],
    )  # fmt: skip
    point = DecisionPoint(
        position=1, step=0, token=" +", prob=0.55, score=0.62, entropy=0.41, margin=0.2, meta_score=0.7,
        alternatives=[
            Alternative(token=" *", token_id=17, prob=0.3, chain="3 * 4 = 12<|answer|>12", answer="12",
                        outcome="different_answer"),
            Alternative(token=" plus", token_id=42, prob=0.1, chain="3 plus 4 = 7<|answer|>7", answer="7",
                        outcome="same_answer"),
        ],
    )  # fmt: skip
    claims = [
        Claim(id="decision-1", kind="decision", step=0,
              statement="At step 1 the model chose ' +' with probability 55%: a decision point, its score 0.62 "
              "reaches the threshold 0.5.",
              stated={"position": 1, "prob": 0.55, "score": 0.62}, check="resampled the token", evidence={"flips": 3},
              status="verified"),
        Claim(id="alternative-1-17", kind="alternative", step=0,
              statement="Choosing ' *' (probability 30%) instead of ' +' at step 1 leads to a different answer (12).",
              stated={"position": 1, "token_id": 17, "answer": "12", "outcome": "different_answer"},
              check="forced the token and continued greedily", evidence={"answer": "12"}, status="verified"),
        Claim(id="dependency-0-2", kind="dependency", step=0,
              statement=f"Step 1 rests on '{REFUTED_SPAN}' in the question (11% of its significance): removing it "
              "changes the step more than removing random spans of the same length.",
              stated={"positions": [11], "text": REFUTED_SPAN, "share": 0.11}, check="masked the span",
              evidence={"kl": 0.001, "random_kl": 0.004}, status="refuted"),
    ]  # fmt: skip
    removed = Claim(
        id="dependency-1-1", kind="dependency", step=1,
        statement="Step 2 rests on 'apples' in the question (20% of its significance): removing it changes the step "
        "more than removing random spans of the same length.",
        stated={"positions": [2], "text": "apples", "share": 0.2}, check="masked the span",
        evidence={"kl": 0.0, "random_kl": 0.01}, status="refuted",
    )  # fmt: skip
    checked = Validation(
        score=2 / 3,
        verified=2,
        refuted=1,
        total=3,
        score_before_refinement=0.5,
        removed_claims=[removed],
        threshold=0.6,
    )
    return Report(
        model="sage-pico-test",
        question=question,
        prompt=f"Question: {question}\nReasoning:",
        prompt_ids=list(range(20)),
        chain=CHAIN,
        finish_reason="eos",
        answer="7",
        answer_confidence=0.91,
        calibrated_answer_confidence=0.85,
        temperature=1.3,
        tokens=tokens,
        steps=[first, answer],
        decision_points=[point] if decisions else [],
        claims=claims if validation else [],
        validation=checked if validation else None,
        own_explanation=OwnExplanation(text="I added 3 and 4.", mean_prob=0.72),
        options={"attention_aggregate": "mean", "threshold": 0.5},
    )


class _TagBalance(HTMLParser):
    """Records tags that close without being open, or stay open at the end."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _assert_balanced(page: str) -> None:
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []


# --- text -----------------------------------------------------------------------------------------------


def test_every_depth_renders_a_different_text():
    report = make_report()
    texts = {depth: render_text(report, depth) for depth in DEPTHS}
    assert len(set(texts.values())) == 3
    for text in texts.values():
        assert "“7”" in text  # the answer, quoted
    assert report.text("expert") == texts["expert"]
    assert len(texts["novice"]) < len(texts["intermediate"]) < len(texts["expert"])


def test_novice_writes_no_numbers_but_percentages():
    """Design: novice writes no number of its own except percentages; report text it quotes (“…”) stays as is."""
    text = render_text(make_report(), "novice")
    assert "85%" in text  # calibrated answer confidence
    unquoted = re.sub(r"“[^”]*”", "", text)
    assert not re.search(r"\d", re.sub(r"\d+%", "", unquoted)), text
    assert "the first step" in text
    assert "step 1" not in text.lower()
    assert "The model's own explanation: “I added 3 and 4.”" in text
    assert "a different answer, “12”" in text
    assert "the same answer, “7”" in text


def test_intermediate_goes_step_by_step():
    text = render_text(make_report(), "intermediate")
    assert "Step 1" in text and "Step 2 (the answer)" in text
    assert "“ +” with probability 55%" in text
    assert "“ *” (30%) led to a different answer, “12”" in text
    assert "“ plus” (10%) led to the same answer, “7”" in text
    assert "“7” in step 1" in text  # the answer step rests on the first step's result
    assert "2 of 3 claims verified by intervention" in text
    assert "1 refuted claim was removed" in text
    assert "(mean token probability 72%)" in text
    assert "0.62" not in text  # raw scores are for experts


def test_expert_has_the_numbers_and_claims():
    text = render_text(make_report(), "expert")
    for number in (
        "meta_confidence 0.9",
        "score 0.62",
        "margin 0.2",
        "meta_score 0.7",
        "entropy 0.41",
        "significance 0.0123",
    ):
        assert number in text
    assert "attention 0.2" in text and "gradient 0.05" in text
    assert "p 0.3" in text and "different_answer" in text
    assert "decision-1 [verified]" in text and "alternative-1-17 [verified]" in text
    assert "Evidence: flips=3" in text
    assert "attention_aggregate=mean" in text and "threshold=0.5" in text
    assert "Score before refinement 0.5; removed refuted claims: dependency-1-1" in text
    assert "2 of 3 claims verified by intervention" in text


@pytest.mark.parametrize("depth", DEPTHS)
def test_refuted_claims_are_never_facts(depth):
    report = make_report()
    text = render_text(report, depth)
    refuted = ("dependency-0-2", "dependency-1-1")
    assert not any(f"[{cid}: verified" in text or f"{cid} [verified" in text for cid in refuted)
    for line in text.splitlines():
        if any(cid in line for cid in refuted) or report.claim("dependency-0-2").statement in line:
            assert "refuted" in line.lower(), line
    for clause in re.findall(rf"“{REFUTED_SPAN}”[^;\n]*", text):
        assert "refuted" in clause.lower(), clause


def test_novice_warns_about_refuted_claims():
    text = render_text(make_report(), "novice")
    assert "should not be trusted" in text
    assert "Statements that failed the experiments were removed." in text


def test_unknown_depth_raises():
    report = make_report()
    for view in (lambda: render_text(report, "guru"), lambda: render_html(report, "guru")):
        with pytest.raises(ValueError, match="novice, intermediate, expert"):
            view()


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_bare_report_renders_at_every_depth(depth):
    report = make_report(decisions=False, validation=False)
    text = render_text(report, depth)
    if depth == "novice":
        assert "never hesitated" in text
    else:
        assert "No token crossed the decision threshold" in text
    assert "claims verified" not in text
    page = render_html(report, depth)
    _assert_balanced(page)
    assert "No claims." in page
    console = Console(record=True, width=120, file=io.StringIO())
    show(report, depth, console)
    assert "Validation: not run." in console.export_text()


# --- HTML -----------------------------------------------------------------------------------------------


def test_html_page_is_well_formed_and_escaped():
    question = "<script>alert('x')</script> " + QUESTION
    page = render_html(make_report(question=question), "intermediate")
    _assert_balanced(page)
    assert page.startswith("<!doctype html>")
    assert '<html lang="en">' in page and '<meta charset="utf-8">' in page and "<title>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert '<th scope="col">' in page
    assert "http" not in page  # nothing external


def test_html_shows_heatmap_decisions_and_claims():
    page = render_html(make_report(), "expert")
    assert '<mark style="background: rgba(' in page
    assert 'title="highest dependency share: 48%">3</mark>' in page
    assert f'title="highest dependency share: 11%">{REFUTED_SPAN}</mark>' in page
    assert '<strong class="decision"' in page and "> +</strong>" in page
    assert "different answer" in page and "same answer" in page
    assert 'style="width: 86.0%"' in page  # first step's confidence bar
    for claim_id in ("dependency-0-2", "dependency-1-1"):
        row = next(row.split("</tr>")[0] for row in page.split("<tr") if f">{claim_id}<" in row)
        assert "refuted" in row and "verified" not in row
    assert "Explanation (expert)" in page


def test_html_fragment_for_jupyter():
    report = make_report()
    fragment = render_html(report, "novice", fragment=True)
    _assert_balanced(fragment)
    assert fragment.startswith("<div") and "<html" not in fragment and "<!doctype" not in fragment
    assert report._repr_html_() == render_html(report, "intermediate", fragment=True)


# --- terminal -------------------------------------------------------------------------------------------


def test_show_prints_the_report():
    report = make_report()
    console = Console(record=True, width=120, file=io.StringIO())
    show(report, "intermediate", console)
    out = console.export_text()
    assert QUESTION in out
    assert "score 0.67" in out
    assert "Decision points" in out and "different_answer" in out
    assert "Top 3 dependencies per step" in out
    assert "Explanation (intermediate)" in out
    assert "█" in out  # confidence bars
