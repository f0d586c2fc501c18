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
    EarlyAnswer,
    Familiarity,
    Intervention,
    OwnExplanation,
    Reliance,
    Report,
    SpanRef,
    Step,
    TokenRecord,
    Validation,
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CHAIN = "3 + 4 = 7<|answer|>7"
REFUTED_SPAN = "How many apples"  # step 1's top-ranked span: its masking test refuted the dependency
UNUSUAL = "the question's tokens were never seen in training"


def _dependency(question: str, text: str, significance: float, share: float, status: str = "unchecked"):
    start = question.index(text)
    kind = "number" if text.isdigit() else "text"
    span = SpanRef(
        source="question", step=None, start=start, end=start + len(text), text=text, kind=kind, positions=[start]
    )
    return DependencyScore(
        span=span, significance=significance, share=share, attention=0.2, gradient=0.05, status=status
    )


def _dependency_claim(step: int, dep: DependencyScore, status: str, **fields) -> Claim:
    """A dependency claim as `claims.dependency_claim` writes it, with its check's result."""
    text = dep.span.text
    return Claim(
        id=f"dependency-{step}-at-{dep.span.positions[0]}", kind="dependency", category="causal", step=step,
        statement=f"Step {step + 1} rests on {text!r} in the question: removing it changes the step more than "
        "removing random spans of the same length.",
        stated={"positions": dep.span.positions, "text": text, "share": dep.share},
        check="masking the span vs 4 random spans", status=status, **fields,
    )  # fmt: skip


def make_report(
    question: str = QUESTION,
    decisions: bool = True,
    validation: bool = True,
    calibrated: bool = False,
    unusual: bool = False,
) -> Report:
    """A two-step report as `explain` would write it for the apples question: step 1's top-ranked span was
    refuted and replaced by the next-ranked one that held; an alternative's outcome and the answer step's
    dependency were refuted too (all three moved to `removed_claims` by refinement)."""
    pieces = ["3", " +", " 4", " =", " 7", "<|answer|>", "7"]
    step_of = [0, 0, 0, 0, 0, None, 1]
    tokens = [
        TokenRecord(
            index=i, id=10 + i, token=t, prob=0.55 if i == 1 else 0.95, entropy=0.1, step=step_of[i],
            calibrated_prob=(0.47 if i == 1 else 0.81) if calibrated else None,
        )
        for i, t in enumerate(pieces)
    ]  # fmt: skip
    refuted_dep = _dependency(question, REFUTED_SPAN, 0.0153, 0.6, "refuted")
    three = _dependency(question, "3", 0.0064, 0.25, "verified")
    first = Step(
        index=0, text="3 + 4 = 7", token_start=0, token_end=5, confidence=0.86, min_prob=0.55, entropy=0.18,
        meta_confidence=0.9, calibrated_confidence=0.71 if calibrated else None,
        dependencies=[refuted_dep, three, _dependency(question, "4", 0.0038, 0.15)],
    )  # fmt: skip
    from_step = SpanRef(source="step", step=0, start=8, end=9, text="7", kind="number", positions=[24])
    apples = _dependency(question, "apples", 0.005, 0.2, "refuted")
    answer = Step(
        index=1, text="7", token_start=6, token_end=7, confidence=0.97, min_prob=0.97, entropy=0.04, is_answer=True,
        calibrated_confidence=0.83 if calibrated else None,
        dependencies=[
            DependencyScore(span=from_step, significance=0.02, share=0.8, attention=0.4, gradient=0.06,
                            status="verified"),
            apples,
        ],
    )  # fmt: skip
    point = DecisionPoint(
        position=1, step=0, token=" +", prob=0.55, score=0.62, entropy=0.41, margin=0.2, meta_score=0.7,
        calibrated_prob=0.47 if calibrated else None, changes_answer=True,
        alternatives=[
            Alternative(token=" *", token_id=17, prob=0.3, chain="3 * 4 = 12<|answer|>12", answer="12",
                        outcome="different_answer", calibrated_prob=0.33 if calibrated else None),
            Alternative(token=" plus", token_id=42, prob=0.1, chain="3 plus 4 = 7<|answer|>7", answer="7",
                        outcome="same_answer", calibrated_prob=0.12 if calibrated else None),
            Alternative(token=" minus", token_id=43, prob=0.04, chain="3 minus 4 = 1<|answer|>1", answer="1",
                        outcome="different_answer", calibrated_prob=0.06 if calibrated else None),
        ],
    )  # fmt: skip
    claims = [
        Claim(id="decision-1", kind="decision", category="causal", step=0,
              statement="At step 1 the model wrote ' +' (55%) where ' *' (30%) also fit: the answer depends on this "
              "choice.",
              stated={"position": 1, "prob": 0.55, "score": 0.62, "changing_token_ids": [17]},
              check="sampled continuations", evidence={"changed_after_chosen": 0.25, "changed_after": {"17": 1.0}},
              status="verified"),
        Claim(id="alternative-1-17", kind="alternative", category="causal", step=0,
              statement="Choosing ' *' (probability 30%) instead of ' +' at step 1 leads to a different answer (12).",
              stated={"position": 1, "token_id": 17, "answer": "12", "outcome": "different_answer"},
              check="forced the token and continued greedily",
              evidence={"sampled_agreement": 1.0, "effect": 0.12345678901234567}, status="verified"),
        Claim(id="alternative-1-42", kind="alternative", category="causal", step=0,
              statement="Choosing ' plus' (probability 10%) instead of ' +' at step 1 leads to the same answer (7).",
              stated={"position": 1, "token_id": 42, "answer": "7", "outcome": "same_answer"},
              check="forced the token and continued greedily", evidence={"sampled_agreement": 0.75},
              status="verified"),
        Claim(id="confidence-step-0", kind="confidence", step=0,
              statement="The model was 86% confident in step 1 (mean token probability).",
              stated={"prob": 0.86, "tokens": [0, 5]}, check="uncached pass",
              evidence={"measured_prob": 0.8600000143051147}, status="verified"),
        _dependency_claim(0, three, "verified", replaces=f"dependency-0-at-{refuted_dep.span.positions[0]}",
                          evidence={"effect": 2.5, "random_median": 0.4}),
    ]  # fmt: skip
    removed = [
        _dependency_claim(0, refuted_dep, "refuted", evidence={"effect": 0.0123, "random_median": 0.5}),
        Claim(id="alternative-1-43", kind="alternative", category="causal", step=0,
              statement="Choosing ' minus' (probability 4%) instead of ' +' at step 1 leads to a different answer "
              "(1).",
              stated={"position": 1, "token_id": 43, "answer": "1", "outcome": "different_answer"},
              check="sampled continuations", evidence={"greedy": True, "ended": True, "sampled_agreement": 0.25},
              status="refuted"),
        _dependency_claim(1, apples, "refuted", evidence={"effect": -0.01, "random_median": 0.2}),
    ]  # fmt: skip
    checked = Validation(
        score=0.5,
        verified=3,
        refuted=3,
        total=6,
        consistency_passed=1,
        consistency_total=1,
        repaired=1,
        removed_claims=removed,
        threshold=0.8,
    )
    familiarity = Familiarity(unusual=unusual, reasons=[UNUSUAL] if unusual else [], question_nll=3.2)
    reliance = Reliance(
        early_answers=[EarlyAnswer(steps=0, answer="12"), EarlyAnswer(steps=1, answer="7")],
        settled_after=1,
        mistakes=[Intervention(step=0, change="'4' -> '5' in step 1", answer="8", changed_answer=True)],
        filler=Intervention(step=None, change="the chain replaced by 9 filler tokens", answer="3", changed_answer=True),
        rests_on_chain=True,
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
        token_temperature=2.2 if calibrated else None,
        tokens=tokens,
        steps=[first, answer],
        decision_points=[point] if decisions else [],
        hesitations=[point.model_copy(update={"position": 3, "token": " =", "changes_answer": False})] * 3,
        familiarity=familiarity,
        reliance=reliance,
        claims=claims if validation else [],
        validation=checked if validation else None,
        own_explanation=OwnExplanation(text="I added 3 and 4.", mean_prob=0.72),
        options={"attention_aggregate": "mean", "threshold": 0.5},
    )


def _terminal(report: Report, depth: str, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    show(report, depth, console)
    return console.export_text()


def _views(report: Report, depth: str) -> dict[str, str]:
    """Every view of the report at a depth, as text (HTML with its tags)."""
    return {
        "text": render_text(report, depth),
        "terminal": _terminal(report, depth),
        "html": render_html(report, depth),
        "fragment": render_html(report, depth, fragment=True),
    }


def _section(text: str, title: str) -> tuple[str, str]:
    """The text outside the paragraph that starts with `title`, and that paragraph."""
    paragraphs = text.split("\n\n")
    inside = [p for p in paragraphs if p.startswith(title)]
    return "\n\n".join(p for p in paragraphs if not p.startswith(title)), "\n\n".join(inside)


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
    text = render_text(make_report(unusual=True), "novice")
    assert "85%" in text  # calibrated answer confidence
    unquoted = re.sub(r"“[^”]*”", "", text)
    assert not re.search(r"\d", re.sub(r"\d+%", "", unquoted)), text
    assert "the first step" in text
    assert "step 1" not in text.lower()
    assert "The model's own explanation: “I added 3 and 4.”" in text
    assert "a different answer, “12”" in text
    assert "three other places" in text  # hesitations: a count in words


def test_intermediate_goes_step_by_step():
    text = render_text(make_report(), "intermediate")
    assert "Step 1" in text and "Step 2 (the answer)" in text
    assert "“ +” with raw probability 55%" in text  # no token calibration: said to be raw
    assert "“ *” (30%) led to a different answer, “12”" in text
    assert "“ plus” (10%) led to the same answer, “7”" in text
    assert "“7” in step 1" in text  # the answer step rests on the first step's result
    assert "(mean raw token probability 72%)" in text
    assert "0.62" not in text  # raw scores are for experts
    assert "e-" not in text and "0.0064" not in text  # no significances below expert: shares


def test_expert_has_the_numbers_and_claims():
    text = render_text(make_report(), "expert")
    for number in (
        "meta_confidence 0.9",
        "score 0.62",
        "margin 0.2",
        "meta_score 0.7",
        "entropy 0.41",
        "significance 0.0064",
        "share 25%",
    ):
        assert number in text
    assert "attention 0.2" in text and "gradient 0.05" in text
    assert "raw p 0.3" in text and "different_answer" in text
    assert "decision-1 [held]" in text and "alternative-1-17 [held]" in text
    assert "[alternative-1-17: held under intervention]" in text
    assert "Evidence: changed_after_chosen=0.25" in text
    assert "effect=0.123." in text and "0.8600000143051147" not in text  # evidence to 3 significant digits
    assert "attention_aggregate=mean" in text and "threshold=0.5" in text
    assert "Consistency checks (numbers read twice):\n- confidence-step-0 [agreed]" in text


# --- 1. refuted claims are never facts --------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_refuted_dependency_is_only_under_refuted(depth):
    """A dependency refuted by construction (status and claim) never reaches the table, the heatmap or the prose:
    it is listed under "Refuted (not facts)" only (by its statement above novice)."""
    report = make_report()
    outside, refuted = _section(render_text(report, depth), "Refuted (not facts)")
    # A repaired claim names the refuted one it replaced, as refuted: that is the one other place it may appear.
    outside = re.sub(
        r"replaces the refuted claim that step 1 rests on “How many apples”: masking it [^)]*\)", "", outside
    )
    outside = outside.replace("it replaces an earlier guess, “How many apples”, that failed its test", "")
    assert REFUTED_SPAN not in outside and "apples'" not in outside.replace("“How many apples”", "")
    if depth != "novice":
        assert f"'{REFUTED_SPAN}'" in refuted and "refuted, masking it changed the step less than" in refuted
        assert "'apples'" in refuted and "' minus'" in refuted
    assert "Refuted (not facts): Three statements" in refuted or depth != "novice"
    terminal = _terminal(report, depth, width=80)
    table = terminal.split("Top 3 dependencies per step")[1].split("Explanation (")[0]
    assert "“3”" in table and REFUTED_SPAN not in table and "apples" not in table
    assert "“ minus”" not in terminal.split("Explanation (")[0]  # the refuted alternative leaves the table
    page = render_html(report, depth)
    assert f">{REFUTED_SPAN}</mark>" not in page and ">apples</mark>" not in page
    assert 'title="highest dependency share: 25%">3</mark>' in page
    dependencies = page.split("<h3>Dependencies</h3>")[1].split("</table>")[0]
    assert "<td>“3”<br>" in dependencies and f"<td>“{REFUTED_SPAN}”" not in dependencies  # a row's span cell
    claims = page.split("<h3>Claims</h3>")[1].split("</table>")[0]
    assert "dependency-0-at-34" not in claims and "refuted" not in claims.replace("the refuted claim", "")
    listed = page.split("<h3>Refuted (not facts)</h3>")[1].split("</table>")[0]
    for claim_id in ("dependency-0-at-34", "alternative-1-43", "dependency-1-at-10"):
        assert f"<td>{claim_id}</td>" in listed


@pytest.mark.parametrize("depth", ["intermediate", "expert"])
def test_a_repaired_claim_says_what_it_replaced_and_why(depth):
    text = render_text(make_report(), depth)
    assert (
        "replaces the refuted claim that step 1 rests on “How many apples”: masking it changed the step less than "
        "random spans (0.012 vs a median 0.500 nats)"
    ) in text
    assert "replaces the refuted claim that step 1 rests on" in render_html(make_report(), depth)


def test_decision_points_are_those_of_the_report_and_hesitations_one_line():
    report = make_report()
    for depth in DEPTHS:
        text = render_text(report, depth)
        assert "“ =”" not in text  # the hesitations' token is never described
        assert ("three other places" if depth == "novice" else "hesitated at 3 places") in text
    assert "The model also hesitated at 3 places that did not change the answer." in _terminal(report, "novice")
    assert "The model also hesitated at 3 places" in render_html(report, "novice")


def test_novice_warns_about_refuted_claims():
    text = render_text(make_report(), "novice")
    assert "Three statements failed their tests and were taken out" in text
    assert "Refuted (not facts): Three statements were tested on the model, failed" in text


# --- 2. the headline: causal claims apart from consistency checks ------------------------------------------

CAUSAL = (
    "3 of 6 causal claims held under intervention (these are claims about the model's computation; they do not say "
    "the answer is right)."
)
CONSISTENCY = "1 of 1 consistency checks agreed (numbers read twice)."
BEFORE = "3 refuted claims were taken out of the explanation; 1 replaced by the next-ranked span that held"


def test_headline_counts_causal_claims_apart_from_consistency_checks():
    report = make_report()
    for name, view in _views(report, "intermediate").items():
        flat = " ".join(view.split())  # the terminal wraps lines
        for line in (CAUSAL, CONSISTENCY, BEFORE):
            assert line.replace("'", "&#x27;" if name in ("html", "fragment") else "'") in flat, (name, line)
    expert = render_text(report, "expert")
    assert CAUSAL in expert and CONSISTENCY in expert and BEFORE in expert
    novice = render_text(report, "novice")
    assert "Three of six statements" in novice and "not whether the answer is right" in novice


def test_a_report_without_causal_claims_says_so_not_0_of_0():
    report = make_report()
    report.validation = report.validation.model_copy(update={"verified": 0, "refuted": 0, "total": 0, "score": 1.0})
    text = render_text(report, "intermediate")
    assert "No causal claim was made" in text and "0 of 0" not in text


@pytest.mark.parametrize("depth", DEPTHS)
def test_no_view_says_verified(depth):
    """'Verified' could read as 'the answer is right': every view says what held instead."""
    for name, view in _views(make_report(), depth).items():
        assert "verified" not in view.lower(), name


# --- 3. one calibrated confidence ----------------------------------------------------------------------------


def test_calibrated_values_are_the_confidence_everywhere():
    report = make_report(calibrated=True)
    intermediate = render_text(report, "intermediate")
    assert "confidence 71%" in intermediate and "confidence 83%" in intermediate  # steps, calibrated
    assert "with probability 47%" in intermediate and "“ *” (33%)" in intermediate  # tokens, calibrated
    assert "86%" not in intermediate and "55%" not in intermediate  # no raw value below expert
    assert "lowest in step 1 (71%), highest in step 2 (83%)" in intermediate
    expert = render_text(report, "expert")
    assert "calibrated confidence 0.71, raw mean token probability 0.86" in expert
    assert "p 0.47 (raw 0.55)" in expert
    terminal = _terminal(report, "intermediate")
    assert "Reasoning chain (bars: calibrated confidence)" in terminal
    assert re.search(r"Step 1 +█+░+ +71%", terminal)
    assert "“ +” at 47%" in terminal
    page = render_html(report, "intermediate")
    assert 'style="width: 71.0%"' in page and 'aria-label="calibrated confidence 71%"' in page
    assert "86%" not in page.split("<h3>Explanation")[0]


def test_only_the_answer_calibrated_says_so():
    report = make_report()
    intermediate = render_text(report, "intermediate")
    assert "raw token probability 86%" in intermediate
    assert "only the answer's confidence is calibrated (85%)" in intermediate
    assert "confidence 86%" not in intermediate
    assert "Only its confidence in the answer is calibrated" in render_text(report, "novice")
    terminal = _terminal(report, "intermediate")
    assert "Reasoning chain (bars: raw token probability)" in terminal
    assert "Only the answer's confidence is calibrated" in terminal
    assert "(85% confident, calibrated)" in terminal
    page = render_html(report, "intermediate")
    assert "Bars: raw token probability." in page and 'aria-label="raw token probability 86%"' in page


# --- 4. an unfamiliar question ----------------------------------------------------------------------------

NOTICE = f"This question is unlike what the model was trained on: {UNUSUAL}. Treat the answer and the explanation"


@pytest.mark.parametrize("depth", DEPTHS)
def test_unfamiliar_question_notice_opens_every_view(depth):
    views = _views(make_report(unusual=True), depth)
    assert views["text"].startswith(NOTICE)
    terminal = views["terminal"]
    assert "Caution" in terminal.splitlines()[0] and " ".join(terminal.split()).find("This question is unlike") < 200
    for page in (views["html"], views["fragment"]):
        body = re.sub(r"<style>.*?</style>", "", page.split('class="sage-report"', 1)[1], flags=re.S)
        first = re.search(r"<(?!/)[a-z0-9]+[^>]*>", body.split(">", 1)[1]).group(0)  # the first element inside
        assert first == '<p class="notice" role="note">' and "<strong>Caution:</strong> This question" in body
    for view in _views(make_report(unusual=False), depth).values():
        assert "unlike what the model was trained on" not in view and "Caution" not in view


# --- 5. reliance on the chain -------------------------------------------------------------------------------


def test_reliance_in_words_and_as_a_table():
    novice = render_text(make_report(), "novice")
    assert "Does the answer rest on the chain? Yes: the answer was settled only after the first step" in novice
    assert "Filler in place of the chain changed the answer to “3”." in novice
    intermediate = render_text(make_report(), "intermediate")
    assert "A mistake put into the chain ('4' -> '5' in step 1) changed the answer to “8”." in intermediate
    expert = render_text(make_report(), "expert")
    assert re.search(r"mistake: '4' -> '5' in step 1 +“8” +changed", expert)
    assert re.search(r"no chain at all +“12” +different", expert)
    page = render_html(make_report(), "expert")
    assert "<h3>Does the answer rest on the chain?</h3>" in page and "<td>cut after step 1</td>" in page


# --- 6. readable ------------------------------------------------------------------------------------------------


def _long_report() -> Report:
    """The apples report with long tokens, spans and answers: what a table must fold, not cut."""
    report = make_report(calibrated=True, unusual=True)
    point = report.decision_points[0]
    point.token = " multiplication"
    for alt in point.alternatives:
        alt.token, alt.answer = " subtraction-and-more", "twelve-thousand-three-hundred"
    return report


@pytest.mark.parametrize("depth", DEPTHS)
def test_terminal_fits_80_columns(depth):
    out = _terminal(_long_report(), depth, width=80)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    for header in ("Alternative", "Leads to", "Answer", "Test", "Share", "Where", "Span"):
        assert header in out
    assert ("Signif." in out) == (depth == "expert")


def test_claim_tags_are_unique():
    report = make_report()
    duplicate = report.claims[1].model_copy(update={"statement": "Another claim with the same id."})
    report.claims.append(duplicate)
    text = render_text(report, "expert")
    assert "- alternative-1-17 [held]" in text and "- alternative-1-17#2 [held]" in text
    page = render_html(report, "expert")
    assert "<td>alternative-1-17#2</td>" in page


def test_html_step_bars_are_aligned():
    page = render_html(make_report(), "intermediate")
    assert "grid-template-columns: 9.5rem 8rem 3.5rem 1fr" in page  # a fixed-width label column
    assert page.count('<span class="label">') == 2


def test_unknown_depth_raises():
    report = make_report()
    for view in (lambda: render_text(report, "guru"), lambda: render_html(report, "guru")):
        with pytest.raises(ValueError, match="novice, intermediate, expert"):
            view()


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_bare_report_renders_at_every_depth(depth):
    report = make_report(decisions=False, validation=False)
    text = render_text(report, depth)
    assert "did not change the answer" in text  # the hesitations
    assert "causal claims held" not in text
    page = render_html(report, depth)
    _assert_balanced(page)
    assert "No claims." in page
    assert "Validation: not run" in _terminal(report, depth)


# --- HTML -----------------------------------------------------------------------------------------------


def test_html_page_is_well_formed_and_escaped():
    question = "<script>alert('x')</script> " + QUESTION
    page = render_html(make_report(question=question, unusual=True), "intermediate")
    _assert_balanced(page)
    assert page.startswith("<!doctype html>")
    assert '<html lang="en">' in page and '<meta charset="utf-8">' in page and "<title>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert '<th scope="col">' in page
    assert "http" not in page  # nothing external


def test_html_shows_heatmap_decisions_and_claims():
    page = render_html(make_report(), "expert")
    _assert_balanced(page)
    assert '<mark style="background: rgba(' in page
    assert 'title="highest dependency share: 25%">3</mark>' in page
    assert '<strong class="decision"' in page and "> +</strong>" in page
    assert "different answer" in page and "same answer" in page
    assert 'style="width: 86.0%"' in page  # first step's raw token probability bar
    assert '<span class="test-held">held</span>' in page
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
    out = _terminal(report, "intermediate")
    assert QUESTION in out
    assert "3 of 6 causal claims held under intervention" in out
    assert "Decision points" in out and "different" in out
    assert "Top 3 dependencies per step" in out
    assert "Explanation (intermediate)" in out
    assert "█" in out  # confidence bars
