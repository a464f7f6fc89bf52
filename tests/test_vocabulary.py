"""The CTC readout's open vocabulary (fusion/training/vocabulary.py) and its readout over a quantized table."""

import json

import torch

from fusion.projectors import CTCReadout
from fusion.training.vocabulary import count_words, english_words, vocabulary_ids


def test_words_are_counted_once_per_text_lower_cased():
    counts = count_words(["The cat saw the cat.", "A dog; the DOG's bone", "x y I"])
    assert counts["the"] == 2 and counts["cat"] == 1 and counts["dog"] == 1 and counts["dog's"] == 1
    assert counts["a"] == 1 and counts["i"] == 1 and "x" not in counts  # single letters: only "a" and "I"


def test_the_vocabulary_spells_each_word_after_a_space_both_cases():
    seen = []

    def encode(text):
        seen.append(text)
        return [len(text), ord(text[1])]

    assert vocabulary_ids(["cat", "dog"], encode) == {4, ord("c"), ord("C"), ord("d"), ord("D")}
    assert seen == [" cat", " Cat", " dog", " Dog"]


def test_english_words_come_from_the_cache_once_counted(tmp_path):
    cached = tmp_path / "words.json"
    cached.write_text(json.dumps(["the", "of", "and", "to"]))
    assert english_words(3, cached) == ["the", "of", "and"]


class _QuantizedTable(torch.nn.Module):
    """A table with no float weight (like a GGUF decoder's): rows only by lookup, which it counts."""

    def __init__(self, table):
        super().__init__()
        self.table, self.calls = table, 0
        self.embedding_dim = table.shape[1]

    def forward(self, ids):
        self.calls += 1
        return self.table[ids]


def test_the_readout_reads_a_quantized_table_once_and_scores_like_a_float_one():
    table = torch.randn(50, 8)
    vocab = torch.tensor([3, 7, 41])
    quant = _QuantizedTable(table)
    a, b = CTCReadout(vocab, quant), CTCReadout(vocab, torch.nn.Embedding.from_pretrained(table))
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 8)
    torch.testing.assert_close(a.logits(x), b.logits(x))
    a.logits(x)
    assert quant.calls == 1  # dequantized once, then kept
