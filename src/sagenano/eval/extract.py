"""Read the final answer out of a model's output, one reader per answer kind, canonicalised like the gold answers.

Answer kinds and their canonical forms:

- "number": a plain decimal without commas, currency, units or trailing zeros ("1,000.50 dollars" -> "1000.5");
  a simple fraction stays a reduced fraction ("6/8" -> "3/4"), and `answers_match` compares numbers by value, so
  "0.75" matches "3/4".
- "choice": an option label, upper case ("(c)" -> "C").
- "truth": "True", "False" or "Unknown".
- "yesno": "yes" or "no".
- "math": the LaTeX of the answer, normalised (`normalize_math`); `answers_match` also compares plain numbers and
  simple fractions by value, so "0.5" matches "\\frac12".

Every reader returns None when the text holds no answer of its kind. Text in the SAGE format (with `<|answer|>`)
is read after that token first, and as a whole when nothing is found there.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ..data import parse_answer

ANSWER_KINDS: tuple[str, ...] = ("number", "choice", "truth", "yesno", "math")
TRUTH_VALUES: tuple[str, ...] = ("True", "False", "Unknown")
YES_NO: tuple[str, ...] = ("yes", "no")

# A phrase that announces the final answer: "the answer is", "Answer:", "answer would be", "Ans =", "####". A bare
# "answer" is not one: "To answer this, 16 - 3 = 13 ..." must not read 16.
_MARKER = re.compile(r"\banswers?\s*(?:is\b|:|=|would be\b|should be\b)|\bans\s*[:=.]|####", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.)])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")
_NEAR = 40  # characters after a marker in which its answer must start ("answer is $1,234.50" fits)


# ---- number ----------------------------------------------------------------------------------------------


def canonical_number(text: str) -> str | None:
    """The canonical form of one number written as text ("$1,000.00" -> "1000", "6/8" -> "3/4"), else None."""
    text = text.strip().replace("−", "-").replace(",", "").replace("$", "").rstrip(".%").strip()
    if re.fullmatch(r"-?\d+/\d+", text):
        numerator, denominator = text.split("/")
        if int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))  # "5.00" -> "5", "-0" -> "0", never "5E+1"
    return format(value.normalize(), "f")


def number_value(text: str) -> Fraction | None:
    """The exact value of a canonical (or raw) number, for comparing "0.75" with "3/4"."""
    canonical = canonical_number(text)
    return None if canonical is None else Fraction(canonical)


def _numbers(text: str) -> list[str]:
    return [match.group() for match in _NUMBER.finditer(text.replace("−", "-"))]


def _after_markers(text: str) -> list[str]:
    """The text just after each answer marker, last marker first."""
    return [text[match.end() : match.end() + _NEAR] for match in reversed(list(_MARKER.finditer(text)))]


def _boxed_number(boxed: str) -> str | None:
    """The number in a box: "12", "\\$1,234", "\\frac{3}{4}" (-> "3/4"), "5\\text{ cm}"."""
    normalized = normalize_math(boxed)
    value = math_value(normalized)
    if value is not None:
        return canonical_number(normalized) or canonical_number(str(value))
    found = _numbers(boxed)
    return canonical_number(found[-1]) if found else None


def extract_number(text: str) -> str | None:
    """The final number: in the last `\\boxed{}`, else just after the last answer marker that is followed by a
    number ("#### 42", "The answer is $1,234.50", "answer: 7 apples"), else the last number in the text."""
    boxed = last_boxed(text)
    if boxed is not None and (number := _boxed_number(boxed)) is not None:
        return number
    for tail in _after_markers(text):
        if found := _numbers(tail):
            return canonical_number(found[0])
    found = _numbers(text)
    return canonical_number(found[-1]) if found else None


# ---- multiple choice -------------------------------------------------------------------------------------


def _label_token(labels: tuple[str, ...]) -> str:
    """A regex for one option label, its letter in the only non-empty group: "(c)", "[C]", or a bare upper-case
    "C"; a bare lower-case letter counts only when nothing word-like follows ("Answer: c" yes, "is a bank" no)."""
    upper = "".join(re.escape(label.upper()) for label in labels)
    lower = upper.lower()
    return (
        rf"(?:[(\[]\s*([{upper}{lower}])\s*[)\]]"
        rf"|\b([{upper}])\b(?![-'’])"
        rf"|\b([{lower}])\b(?=[ \t]*(?:[).:,;\n]|$)))"
    )


def _choice_patterns(labels: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(strong, weak): a label that an answer phrase names, and a label merely written as "(C)" or "C)"."""
    token = _label_token(labels)
    upper = "".join(re.escape(label.upper()) for label in labels)
    keyword = r"(?i:\banswers?\b|\bans\b|\boptions?\b|\bchoices?\b)"
    strong = re.compile(
        rf"{keyword}[^A-Za-z0-9\n]{{0,6}}(?i:(?:is|would be|should be)\b[^A-Za-z0-9\n]{{0,4}})?(?i:option\s*)?{token}"
        rf"|{token}\s*(?i:is|would be)\s+(?i:the\s+)?(?i:correct|right|best|answer)"
    )
    weak = re.compile(rf"[(\[]\s*([{upper}{upper.lower()}])\s*[)\]]|(?:^|(?<=\s))([{upper}])\)")
    return strong, weak


def _label_of(match: re.Match[str]) -> str:
    return next(group for group in match.groups() if group).upper()


def extract_choice(text: str, labels: tuple[str, ...], choices: tuple[str, ...] = ()) -> str | None:
    """The chosen option label, upper case.

    In order: the last label an answer phrase names ("answer is (C)", "Answer: c", "Option B", "D is the correct
    choice"); else a last line that is only a label ("D."); else the last label written "(C)" or "C)"; else the
    one option whose text follows the last answer marker ("the answer is bank").

    Args:
        text: Model output.
        labels: The item's option labels, e.g. ("A", "B", "C", "D", "E").
        choices: The option texts (without labels), in label order; enables matching by text.
    """
    if not labels:
        return None
    strong, weak = _choice_patterns(labels)
    if named := list(strong.finditer(text)):
        return _label_of(named[-1])
    lines = [line.strip(" .*:") for line in text.strip().splitlines() if line.strip(" .*:")]
    if lines and (only_label := re.fullmatch(_label_token(labels), lines[-1])):
        return _label_of(only_label)
    if written := list(weak.finditer(text)):
        return _label_of(written[-1])
    return _choice_by_text(text, labels, choices)


def _choice_by_text(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> str | None:
    """The label of the only option whose text appears after the last answer marker (or anywhere, without one).

    An option named only inside a longer named option ("band" in "marching band") does not count; options with
    the same text are ambiguous (None)."""
    markers = list(_MARKER.finditer(text))
    region = text[markers[-1].end() :] if markers else text
    named = {
        label: choice.strip().lower()
        for label, choice in zip(labels, choices, strict=False)
        if choice.strip() and re.search(rf"(?<!\w){re.escape(choice.strip())}(?!\w)", region, re.IGNORECASE)
    }
    longest = [
        label for label, name in named.items() if not any(name != other and name in other for other in named.values())
    ]
    return longest[0].upper() if len(longest) == 1 else None


# ---- truth values and yes/no -----------------------------------------------------------------------------

_VERDICT = re.compile(
    r"\bneither true nor false\b|\bnot (?:true|false)\b|\b(?:true|false|unknown|uncertain|undetermined)\b"
    r"|\bcannot be (?:determined|known|proven|proved)\b|\bcan(?:'|’)?t be (?:determined|known)\b"
    r"|\bnot enough information\b",
    re.IGNORECASE,
)


def _verdict(phrase: str) -> str:
    """Map one matched verdict phrase to True / False / Unknown ("not true" is False)."""
    phrase = phrase.lower()
    if phrase in ("true", "not false"):
        return "True"
    if phrase in ("false", "not true"):
        return "False"
    return "Unknown"


def extract_truth(text: str) -> str | None:
    """True / False / Unknown: the first verdict after the last answer marker, else the last verdict in the text
    ("cannot be determined", "uncertain" -> Unknown; "not true" -> False)."""
    for tail in _after_markers(text):
        if match := _VERDICT.search(tail):
            return _verdict(match.group())
    verdicts = _VERDICT.findall(text)
    return _verdict(verdicts[-1]) if verdicts else None


_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


def canonical_yesno(value: str | bool) -> str | None:
    """Map a bool, or yes/no/true/false in any case, to "yes" / "no"; anything else to None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    value = value.strip().strip(".!").lower()
    return {"yes": "yes", "true": "yes", "no": "no", "false": "no"}.get(value)


def extract_yesno(text: str) -> str | None:
    """yes / no: after the last answer marker, else the text's first word when it is one ("Yes, because ..."),
    else the last yes/no/true/false in the text."""
    for tail in _after_markers(text):
        if match := _YES_NO.search(tail):
            return canonical_yesno(match.group())
    if match := re.match(r"\W*(yes|no)\b", text, re.IGNORECASE):
        return canonical_yesno(match.group(1))
    found = _YES_NO.findall(text)
    return canonical_yesno(found[-1]) if found else None


# ---- competition math (LaTeX) ----------------------------------------------------------------------------


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at `text[start]` and the index after it; nested braces count."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index], index + 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces handled; `\\boxed 5` too)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len("\\boxed") :] if rest.startswith("\\boxed") else rest[len("\\fbox") :]
    if rest.lstrip().startswith("{"):
        group = _braced(rest, rest.index("{"))
        return None if group is None else group[0].strip()
    bare = re.match(r"\s+([^\s$]+)", rest)
    return bare.group(1) if bare else None


def _fix_fracs(text: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{2} -> \\frac{1}{2}, \\frac{1}2 -> \\frac{1}{2}."""
    text = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\s*(\d)(?=\s*\{)", r"\\frac{\1}", text)
    return re.sub(r"\\frac\s*(\{[^{}]*\})\s*([\w\d])", r"\\frac\1{\2}", text)


def _strip_text_units(text: str) -> str:
    """Unwrap `\\text{...}` / `\\mbox{...}`; a trailing one after other content is a unit and goes."""
    match = re.search(r"\\(?:text|textbf|mbox|mathrm)\s*\{", text)
    while match:
        group = _braced(text, match.end() - 1)
        if group is None:
            break
        inner, end = group
        unit_suffix = end == len(text) and re.search(r"\d", text[: match.start()]) is not None
        text = text[: match.start()] + ("" if unit_suffix else inner) + text[end:]
        match = re.search(r"\\(?:text|textbf|mbox|mathrm)\s*\{", text)
    return text


def normalize_math(answer: str) -> str:
    """A canonical string for a LaTeX answer, so that equal answers written differently compare equal.

    Drops spaces, `\\left`/`\\right`, `\\!`, `\\,`, dollars, degree marks, percent signs, `\\text{}` units and a
    trailing period; maps dfrac/tfrac to frac; braces `\\frac12` and `\\sqrt2`; writes "a/b" as `\\frac{a}{b}`;
    removes a leading "x =" and thousands commas; "0.50" -> "0.5", ".5" -> "0.5".
    """
    text = answer.strip().replace("\n", "").replace("\\!", "").replace("\\$", "").replace("$", "")
    text = re.sub(r"(?<!\\)\\[,;: ]", "", text)  # spacing commands like "\,"; a matrix row break "\\" stays
    text = re.sub(r"\\left\b|\\right\b", "", text)
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text).replace("°", "")
    text = text.replace("\\%", "").replace("%", "").replace("dfrac", "frac").replace("tfrac", "frac")
    text = _strip_text_units(text)
    text = re.sub(r"\s+", "", text).rstrip(".")
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)
    text = _fix_fracs(text)
    text = re.sub(r"^[a-zA-Z]\w?=", "", text)  # "x=5" -> "5"; "f(x)=..." stays
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    if (simple := re.fullmatch(r"(-?)(\d+)/(\d+)", text)) is not None:
        text = f"{simple.group(1)}\\frac{{{simple.group(2)}}}{{{simple.group(3)}}}"
    if re.fullmatch(r"-?\d*\.\d+|-?\d+\.\d*", text):
        text = canonical_number(text) or text
    return text


def math_value(normalized: str) -> Fraction | None:
    """The exact value of a normalised answer that is a plain number or a simple \\frac, else None."""
    if (frac := re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", normalized)) is not None:
        sign, numerator, denominator = frac.groups()
        if int(denominator) == 0:
            return None
        return Fraction(int(numerator), int(denominator)) * (-1 if sign else 1)
    if re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\d+/\d+)", normalized):
        return number_value(normalized)
    return None


def extract_math(text: str) -> str | None:
    """The normalised final answer: the last `\\boxed{}`/`\\fbox{}`, else "the answer is $...$" (or the rest of
    its sentence), else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return normalize_math(boxed)
    for tail in _after_markers(text):
        inline = re.match(r"\s*\$([^$]+)\$", tail) or re.match(r"\s*([^\n]+?)(?:\.\s|\.?$|\n)", tail)
        if inline and inline.group(1).strip():
            return normalize_math(inline.group(1))
    found = _numbers(text)
    return normalize_math(found[-1]) if found else None


def math_equal(predicted: str, gold: str) -> bool:
    """Equal after `normalize_math`, or the same plain-number / simple-fraction value."""
    predicted, gold = normalize_math(predicted), normalize_math(gold)
    if predicted == gold:
        return True
    value, gold_value = math_value(predicted), math_value(gold)
    return value is not None and value == gold_value


# ---- dispatch --------------------------------------------------------------------------------------------


def _extract_kind(kind: str, text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> str | None:
    if kind == "number":
        return extract_number(text)
    if kind == "choice":
        return extract_choice(text, labels, choices)
    if kind == "truth":
        return extract_truth(text)
    if kind == "yesno":
        return extract_yesno(text)
    if kind == "math":
        return extract_math(text)
    raise ValueError(f"Unknown answer kind {kind!r}: use one of {', '.join(ANSWER_KINDS)}.")


def extract_answer(kind: str, text: str, labels: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> str | None:
    """The canonical answer of kind `kind` in a model's output, or None.

    SAGE-format output is read after `<|answer|>` first; when nothing is found there, the whole text is read.

    Args:
        kind: One of `ANSWER_KINDS`.
        text: Model output (with or without the prompt).
        labels: Option labels, needed for "choice".
        choices: Option texts in label order; lets "choice" match an answer given as the option's text.

    Raises:
        ValueError: If `kind` is unknown.
    """
    sage_answer = parse_answer(text)
    if sage_answer:
        found = _extract_kind(kind, sage_answer, labels, choices)
        if found is not None:
            return found
    return _extract_kind(kind, text, labels, choices)


def answers_match(kind: str, predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold one: numbers and math by value where cheap, the rest exactly
    after canonicalisation. A missing prediction is wrong."""
    if predicted is None:
        return False
    if kind == "number":
        value = number_value(predicted)
        return value is not None and value == number_value(gold)
    if kind == "math":
        return math_equal(predicted, gold)
    if kind == "choice":
        return predicted.strip().upper() == gold.strip().upper()
    if kind == "yesno":
        return canonical_yesno(predicted) == canonical_yesno(gold)
    if kind == "truth":
        return predicted.strip().capitalize() == gold.strip().capitalize()
    raise ValueError(f"Unknown answer kind {kind!r}: use one of {', '.join(ANSWER_KINDS)}.")
