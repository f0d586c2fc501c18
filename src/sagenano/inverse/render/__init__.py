"""Views of an explanation report: natural-language text, a rich terminal view and a self-contained HTML page.

Everything rendered comes from the report: measured numbers and the text of the question and chain; no reason
is invented. Steps are numbered from 1 for readers (the step with `index` 0 is "step 1"). Three depths: novice,
intermediate and expert (`text.py` says what each writes). Every view shows the same numbers: one calibrated
confidence where the report has one (raw values at expert only, labelled raw), shares rather than raw
significances below expert, evidence to 3 significant digits.

A claim the interventions refuted is never stated as a fact: a refuted dependency span leaves the tables, the
heatmap and the prose, a refuted alternative leaves its decision point's listing, and refuted claims are listed
only under "Refuted (not facts)". "Held" says what held: a claim about the model's computation, not the answer.

- `words.py`: the wording every view shares (numbers, quotations, step names, the confidence scale);
- `checks.py`: claims and their checks (the headline, what held, what was refuted and why, what replaced it);
- `notices.py`: what a report says about its limits (an unfamiliar question, reliance on the chain, hesitations);
- `text.py`: `render_text`, the prose at three depths;
- `terminal.py`: `show`, the rich terminal view (80 columns);
- `html.py`: `render_html`, the HTML page and its CSS;
- `highlight.py`: where decision-point tokens and dependency spans lie in the text;
- `interact.py`: the prose of the interactive answers (why A over B, what if, a simpler way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_getattr

# Lazy (PEP 562): the report's schema reads `words.Depth` without loading rich and the HTML views.
_EXPORTS = {
    "CONFIDENT": "text",
    "no_decisions_text": "text",
    "render_html": "html",
    "render_text": "text",
    "show": "terminal",
}
__all__ = ["CONFIDENT", "no_decisions_text", "render_html", "render_text", "show"]

if TYPE_CHECKING:
    from .html import render_html
    from .terminal import show
    from .text import CONFIDENT, no_decisions_text, render_text

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
