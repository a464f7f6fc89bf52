"""The CTC readout's token trigram and its beam search (fusion/readout_lm.py): a proper distribution, the
tables survive a file, and the search reads what the frames and the text agree on."""

import math

import pytest
import torch

from fusion.readout_lm import END, START, TokenTrigram, beam_search

SENTENCES = [[1, 2, 3], [1, 2, 4], [5, 2, 3], [1, 6], [3, 3, 2, 1]]


@pytest.mark.parametrize("min_trigram", [1, 2, 3])
@pytest.mark.parametrize("context", [(START, START), (START, 1), (1, 2), (6, 5), (9, 9), (2, 3)])
def test_the_trigram_is_a_distribution_in_every_context_pruned_or_not(context, min_trigram):
    lm = TokenTrigram.fit(SENTENCES, min_trigram=min_trigram, vocabulary=10)  # tokens 0-9 and the end
    total = sum(math.exp(lm.score(context, t)) for t in [*range(10), END])
    assert total == pytest.approx(1.0, abs=1e-9)


def test_there_is_no_model_of_no_text():
    with pytest.raises(ValueError, match="no text"):
        TokenTrigram.fit([])


def test_seen_continuations_beat_unseen_ones_and_unseen_tokens_get_the_floor():
    lm = TokenTrigram.fit(SENTENCES, vocabulary=10)
    assert lm.score((1, 2), 3) > lm.score((1, 2), 6) > lm.score((1, 2), 9)
    assert lm.score((START, START), 1) > lm.score((START, START), 2)
    assert lm.score((7, 8), 9) == pytest.approx(lm.unseen)  # nothing of it seen: the floor


def test_trigrams_seen_once_are_dropped_but_their_words_keep_the_bigram():
    full, pruned = TokenTrigram.fit(SENTENCES, min_trigram=1), TokenTrigram.fit(SENTENCES, min_trigram=2)
    assert (5, 2, 3) in full.logp and (5, 2, 3) not in pruned.logp and (2, 3) in pruned.logp
    assert (START, START, 1) in pruned.logp  # seen three times


def test_the_tables_survive_tensors():
    lm = TokenTrigram.fit(SENTENCES, vocabulary=10)
    lm.alpha, lm.beta, lm.beam = 0.7, 2.0, 5
    back = TokenTrigram.from_tensors({k: v.clone() for k, v in lm.to_tensors().items()})
    assert (back.alpha, back.beta, back.beam) == (pytest.approx(0.7, abs=1e-3), 2.0, 5)  # float16
    for ctx in [(START, START), (1, 2), (3, 3), (9, 9)]:
        for t in [1, 2, 3, 6, 9, END]:
            assert back.score(ctx, t) == pytest.approx(lm.score(ctx, t), abs=0.02)  # float16 on disk
    wide = TokenTrigram.fit([[151_935, 0, 7], [0, 151_935]])  # Qwen's last token id and the first
    tensors = wide.to_tensors()
    assert tensors["short_keys"].dtype == tensors["context_keys"].dtype == torch.int32  # bigrams fit int32
    assert TokenTrigram.from_tensors(tensors).logp.keys() == wide.logp.keys()
    assert TokenTrigram.from_tensors(tensors).backoff.keys() == wide.backoff.keys()


def frames(rows):
    """(blank, top log-probs, top ids) from rows of {token id or 0 for the blank: probability}."""
    blank = torch.tensor([math.log(r.get(0, 1e-9)) for r in rows])
    ids = sorted({t for r in rows for t in r if t})
    top = torch.tensor([[math.log(r.get(t, 1e-9)) for t in ids] for r in rows])
    order = top.argsort(dim=1, descending=True)
    return blank, top.gather(1, order), torch.tensor(ids)[order]


def test_the_text_decides_between_tokens_the_frames_cannot_tell_apart():
    lm = TokenTrigram.fit([[1, 2, 3]] * 3 + [[1, 2, 4]], vocabulary=10)
    heard = frames([{1: 0.9, 0: 0.1}, {2: 0.9, 0: 0.1}, {4: 0.45, 3: 0.44, 0: 0.11}])
    assert beam_search(*heard, lm) == [1, 2, 3]
    lm.alpha = 0.0  # the frames alone: greedy's answer
    assert beam_search(*heard, lm) == [1, 2, 4]


def test_clear_frames_win_over_the_text():
    lm = TokenTrigram.fit([[1, 2, 3]] * 3, vocabulary=10)
    assert beam_search(*frames([{1: 0.95, 0: 0.05}, {2: 0.95, 0: 0.05}, {6: 0.95, 3: 0.01, 0: 0.04}]), lm) == [1, 2, 6]


def test_a_repeat_needs_a_blank_between_as_in_ctc():
    lm = TokenTrigram.fit([[1, 1], [1]], vocabulary=4)
    lm.alpha, lm.beta = 0.0, 0.0
    assert beam_search(*frames([{1: 0.9, 0: 0.1}, {1: 0.9, 0: 0.1}]), lm) == [1]
    assert beam_search(*frames([{1: 0.9, 0: 0.1}, {0: 0.9, 1: 0.1}, {1: 0.9, 0: 0.1}]), lm) == [1, 1]
    assert beam_search(*frames([{0: 0.99, 1: 0.01}] * 3), lm) == []


def test_the_readout_searches_with_its_language_model():
    from fusion.projectors import CTCReadout

    readout = CTCReadout(torch.tensor([30, 40, 50]), torch.nn.Embedding(60, 4))
    probs = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.1, 0.0, 0.45, 0.44]])  # blank, 30, 40, 50
    readout.logits = lambda x: probs.clamp_min(1e-9).log()
    assert readout.token_ids(torch.zeros(2, 4)) == [30, 40]  # greedy
    readout.lm = TokenTrigram.fit([[30, 50]] * 4, vocabulary=3)
    assert readout.token_ids(torch.zeros(2, 4)) == [30, 50]
