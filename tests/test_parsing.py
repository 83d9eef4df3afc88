from hypothesis import given, settings
from hypothesis import strategies as st

from promptevo.llms.parsing import (
    MAX_INSTRUCTION_CHARS,
    MAX_REWRITE_CHARS,
    clean_text,
    parse_gradient,
    parse_instruction,
    parse_rewrite,
)


def test_rewrite_strips_preamble_label_and_quotes():
    raw = 'Sure! Here is the rewritten prompt:\n\n"A thundering waterfall in a misty jungle, golden hour, 8k"\n\nThis adds lighting.'
    r = parse_rewrite(raw, "a waterfall")
    assert r.text == "A thundering waterfall in a misty jungle, golden hour, 8k"
    assert r.handling is None


def test_rewrite_label_only_line():
    r = parse_rewrite("**Prompt:** a samurai under cherry blossoms, ink wash", "a samurai")
    assert r.text == "a samurai under cherry blossoms, ink wash"


def test_empty_reply_falls_back_to_naive_prompt_and_says_so():
    r = parse_rewrite("   \n\x00\x07  ", "a waterfall")
    assert r.text == "a waterfall"
    assert r.handling == "unusable_reply_used_naive_prompt"


def test_overlong_rewrite_is_capped_at_a_word():
    r = parse_rewrite("word " * 1000, "x")
    assert len(r.text) <= MAX_REWRITE_CHARS
    assert r.text.endswith("word")
    assert r.handling == "capped_length"


def test_gradient_pairs_in_order():
    raw = """Inference 1: The prompts lack lighting.
Improvement 1: Ask for a named light source.
Some chatter in between.
Inference 2: They drift off the subject.
Improvement 2: Require the subject in the first words."""
    items = parse_gradient(raw)
    assert [i.improvement for i in items] == ["Ask for a named light source.", "Require the subject in the first words."]
    assert items[1].inference == "They drift off the subject."


def test_gradient_without_markers_uses_bullets():
    items = parse_gradient("- Mention the time of day and the light.\n- Name an art style explicitly.")
    assert len(items) == 2


def test_gradient_of_junk_is_empty():
    assert parse_gradient("lol") == []


def test_instruction_between_tags():
    raw = "Okay.\n<instruction>Describe the subject first, then add lighting, colour and a style.</instruction> bye"
    assert parse_instruction(raw) == "Describe the subject first, then add lighting, colour and a style."


def test_instruction_too_short_is_rejected():
    assert parse_instruction("<instruction>ok</instruction>") is None


def test_control_characters_are_removed():
    assert clean_text("a\x1b[31mred\x00 text\u200b", 100) == "a [31mred text"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_parsers_never_raise_and_cap_output(raw):
    r = parse_rewrite(raw, "fallback")
    assert r.text and len(r.text) <= MAX_REWRITE_CHARS
    for item in parse_gradient(raw):
        assert len(item.improvement) <= 400
    ins = parse_instruction(raw)
    assert ins is None or len(ins) <= MAX_INSTRUCTION_CHARS


def test_an_instruction_is_stored_without_the_models_commentary_and_never_cut_mid_sentence():
    from promptevo.llms.parsing import clip_at_sentence, parse_instruction

    reply = ("Here is the new instruction:\n\nRewrite the prompt with concrete lighting, lens and texture words. Keep the subject.\n\n"
             "This instruction improves the images because it adds photographic detail that the reward model prefers.")
    assert parse_instruction(reply) == "Rewrite the prompt with concrete lighting, lens and texture words. Keep the subject."
    two = "Describe the subject first.\n\nThen add the setting and the light, in that order, briefly."
    assert parse_instruction(two) == two  # a second paragraph that is instruction stays
    long = " ".join(["Add vivid colour words to every prompt."] * 40)
    cut = parse_instruction(long, limit=200)
    assert len(cut) <= 200 and cut.endswith("prompt.")  # at a sentence end
    assert clip_at_sentence("word " * 100, 50).endswith("…") and len(clip_at_sentence("word " * 100, 50)) <= 50
    assert clip_at_sentence("short.", 50) == "short."
