"""One home for answers: where a traced chain states its answer, the tokens calibration and evaluation score."""

import pytest

from conftest import make_sage
from sagenano.data.format import prompt_text
from sagenano.generation import trace_generate
from sagenano.inverse.answers import locate_answer, marked_answer_tokens


def traced(model, tokenizer, chain: str):
    forced = tokenizer(chain, add_special_tokens=False).input_ids
    return trace_generate(model, tokenizer, prompt_text("x?"), max_new_tokens=len(forced), forced=forced, chat=False,
                          attention="none")  # fmt: skip


@pytest.mark.parametrize(
    ("chain", "answer", "spelled"),
    [
        ("3x = 12<|step|>x = 4<|answer|>4<|endoftext|>", "4", "4"),
        ("x = 4<|answer|>42<|step|>5", "42", "42"),  # the answer ends at the next special token, as parse_answer reads
        ("x = 4<|answer|> <|endoftext|>", None, None),  # an empty answer is no answer
    ],
)
def test_the_marked_answer_is_the_step_after_the_answer_token(tokenizer, chain, answer, spelled):
    trace = traced(make_sage(tokenizer), tokenizer, chain)
    span = locate_answer(trace)
    assert span.answer == answer
    tokens = marked_answer_tokens(trace)
    if spelled is None:
        assert tokens is None and not span.marked
    else:
        assert span.marked and span.step is not None
        assert tokenizer.decode(trace.token_ids[tokens[0] : tokens[1]]).strip() == spelled


def test_an_unmarked_answer_is_found_in_the_text_but_not_scored_as_marked(tokenizer):
    trace = traced(make_sage(tokenizer), tokenizer, "3 + 4 = 7, so the answer is 7.")
    span = locate_answer(trace)
    assert span.answer == "7" and not span.marked
    assert "7" in tokenizer.decode(trace.token_ids[span.tokens]) and marked_answer_tokens(trace) is None
