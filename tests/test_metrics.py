from app.metrics import normalize_text, word_error_rate


def test_normalisation_ignores_case_punctuation_and_spelling_variants():
    assert normalize_text("And Mr. John Dashwood, ill-disposed!") == "and mister john dashwood ill disposed"
    assert normalize_text("Eight of spades, twenty one") == "8 of spades 21"
    assert normalize_text("Café") == "cafe"


def test_word_error_rate_counts_substitutions_insertions_and_deletions():
    assert word_error_rate("the cat sat", "the cat sat") == 0
    assert word_error_rate("the cat sat", "the dog sat") == 1 / 3
    assert word_error_rate("the cat sat", "the cat sat down") == 1 / 3
    assert word_error_rate("the cat sat", "cat") == 2 / 3
    assert word_error_rate("8 of spades", "eight of spades") == 0
    assert word_error_rate("", "") == 0 and word_error_rate("", "noise") == 1


def test_contains_any_matches_whole_normalised_words_only():
    from app.metrics import contains_any

    assert contains_any("The capital of France is PARIS.", ["paris"])
    assert contains_any("It has twenty-one legs", ["21"])  # number words and hyphens normalised
    assert contains_any("a soccer ball on grass", ["football", "soccer ball"])
    assert not contains_any("Parisian cafes", ["paris"])  # a whole word, not a prefix
    assert contains_any("a church's architecture", ["church"]) and contains_any("Paris's museums", ["paris"])
    assert not contains_any("the churches", ["church"])  # a possessive names its noun; a plural is another word
    assert not contains_any("anything at all", ["", "?"])  # an answer that normalises to nothing never matches
