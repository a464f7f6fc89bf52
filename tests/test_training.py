"""Projector training on a tiny model: it learns, it resumes exactly after an interruption, and a seed
fixes the result."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fusion.training.loop import TrainConfig, train_projector


@pytest.fixture()
def tiny_data(tmp_path, tiny_tokenizer, tiny_omni):
    """Six 'clips' of random encoder frames whose targets are fixed word sequences."""
    torch.manual_seed(3)
    words = ["red green blue", "one two three", "hello world", "the cat", "a dog", "please say it again"]
    feats, meta = {}, []
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, w in enumerate(words):
        key = f"clip{i}"
        feats[key] = torch.randn(40 + 8 * i, tiny_omni.audio_tower.feature_dim).half()
        ids = tiny_tokenizer.encode(w, add_special_tokens=False) + [eos]
        meta.append({"key": key, "text": w, "answer_key": None, "kind": "x", "voice": "v", "split": "train",
                     "seconds": 1.0, "answer_ids": ids, "transcript_ids": ids})
    data = tmp_path / "data"
    data.mkdir()
    save_file(feats, str(data / "features.safetensors"))
    (data / "meta.json").write_text(json.dumps(meta))
    return data


def fresh_projector(model, seed=0):
    torch.manual_seed(seed)
    for m in model.audio_projector.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    with torch.no_grad():
        model.audio_projector.ln_pre.weight.fill_(1.0)
        model.audio_projector.ln_post.weight.fill_(0.3)


@pytest.fixture()
def ctc_model(tiny_omni):
    """The shared tiny model with a fresh projector; the CTC readout training attaches is taken off after."""
    fresh_projector(tiny_omni)
    yield tiny_omni
    tiny_omni.audio_readout, tiny_omni.trained = None, set()


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_the_projector_learns_its_targets(tiny_omni, tiny_data, tmp_path):
    fresh_projector(tiny_omni)
    train_projector(tiny_omni, tiny_data, tmp_path / "run", TrainConfig(steps=60, batch_size=4, lr=1e-2, warmup=5),
                    log=lambda *_: None)
    curve = losses(tmp_path / "run")
    assert sum(curve[-10:]) / 10 < 0.6 * sum(curve[:10]) / 10
    assert not tiny_omni.decoder.model.layers[0].self_attn.q_proj.weight.requires_grad  # decoder frozen


@pytest.mark.parametrize("objective", ["distill", "ctc"])
def test_an_interrupted_run_resumes_to_the_same_weights(ctc_model, tiny_data, tmp_path, objective):
    tiny_omni = ctc_model
    cfg = TrainConfig(steps=8, batch_size=2, checkpoint_every=4, objective=objective)
    fresh_projector(tiny_omni)
    whole = load_file(str(train_projector(tiny_omni, tiny_data, tmp_path / "a", cfg, log=lambda *_: None)))
    fresh_projector(tiny_omni)
    # interrupted two steps after the step-4 checkpoint: steps 5 and 6 are done again on resume
    assert train_projector(tiny_omni, tiny_data, tmp_path / "b", cfg, log=lambda *_: None, stop_after=6) is None
    fresh_projector(tiny_omni, seed=99)  # whatever is in memory, the checkpoint wins
    resumed = load_file(str(train_projector(tiny_omni, tiny_data, tmp_path / "b", cfg, log=lambda *_: None)))
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k])
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # the curve has each step once
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"))


def test_the_same_seed_gives_the_same_projector(tiny_omni, tiny_data, tmp_path):
    out = []
    for run in ("x", "y"):
        fresh_projector(tiny_omni)
        out.append(load_file(str(train_projector(tiny_omni, tiny_data, tmp_path / run, TrainConfig(steps=5, batch_size=2),
                                                 log=lambda *_: None))))
    for k in out[0]:
        assert torch.equal(out[0][k], out[1][k])


def test_a_class_prototype_makes_the_head_name_that_class(tiny_omni):
    from fusion.training.vision_data import push_towards

    head = tiny_omni.vision_tower.model.get_classifier()
    n = tiny_omni.vision_tower.num_patches
    torch.manual_seed(0)
    feats = torch.rand(n, tiny_omni.vision_tower.feature_dim)
    mask = torch.zeros(n)
    mask[: n - 2] = 1  # the tiny random head needs most of the image
    for c in (0, 17, 999):
        pushed = push_towards(feats, c, mask, head.weight.detach(), head.bias.detach())
        assert torch.softmax(head(pushed.mean(0)), -1)[c] >= 0.6
        assert torch.equal(pushed[n - 2:], feats[n - 2:])  # outside the region: untouched


def test_the_vision_projector_learns_from_photos_and_prototypes(tiny_omni, tmp_path):
    from fusion.training.vision_data import build_vision_dataset

    build_vision_dataset(tiny_omni, tmp_path / "vdata", per_photo=2, log=lambda *_: None)
    cfg = TrainConfig(modality="vision", steps=80, batch_size=4, lr=1e-2, warmup=5)
    train_projector(tiny_omni, tmp_path / "vdata", tmp_path / "vrun", cfg, log=lambda *_: None)
    curve = losses(tmp_path / "vrun")
    assert sum(curve[-8:]) / 8 < 0.7 * sum(curve[:8]) / 8


def test_the_ctc_readout_learns_to_read_the_transcripts(ctc_model, tiny_data, tmp_path):
    """CTC over the decoder's embedding table: after training, decoding each training clip's projected
    frames (the beam search with the language model fitted on the training text) gives back exactly its
    transcript's token ids."""
    cfg = TrainConfig(steps=150, batch_size=6, lr=1e-2, warmup=5, objective="ctc")
    weights = train_projector(ctc_model, tiny_data, tmp_path / "run", cfg, log=lambda *_: None)
    curve = losses(tmp_path / "run")
    assert sum(curve[-10:]) / 10 < 0.2 * sum(curve[:10]) / 10
    feats = load_file(str(tiny_data / "features.safetensors"))
    meta = json.loads((tiny_data / "meta.json").read_text())
    readout = ctc_model.audio_readout
    with torch.no_grad():
        read = {m["key"]: readout.token_ids(ctc_model.audio_projector(feats[m["key"]].float())) for m in meta}
    assert read == {m["key"]: m["transcript_ids"][:-1] for m in meta}  # all but the end-of-turn token
    assert set(readout.vocab.tolist()) == {t for m in meta for t in m["transcript_ids"][:-1]}
    saved = load_file(str(weights))
    assert saved["audio.readout.vocab"].dtype == torch.int64 and "audio.readout.blank" in saved
    # the language model: the transcripts and the fortunes (Debian's, when installed) as token trigrams
    assert readout.lm is not None and saved["audio.readout_lm.short_keys"].dtype == torch.int32
    never = next(t for t in range(10 ** 6) if (t,) not in readout.lm.logp)  # a token the text never holds
    assert readout.lm.score((-1, -1), meta[0]["transcript_ids"][0]) > readout.lm.score((-1, -1), never)


def test_a_ctc_projector_survives_install_and_loading(ctc_model, tiny_data, tmp_path, monkeypatch):
    """The installed file (float16 on disk) keeps the vocabulary's token ids exact, and loading it
    attaches a readout, with its language model, that reads what the trained one read."""
    import app.projector_training as pt

    cfg = TrainConfig(steps=40, batch_size=6, lr=1e-2, warmup=5, objective="ctc")
    run = tmp_path / "run"
    weights = train_projector(ctc_model, tiny_data, run, cfg, log=lambda *_: None)
    frames = load_file(str(tiny_data / "features.safetensors"))["clip3"].float()
    with torch.no_grad():
        before = ctc_model.audio_readout.token_ids(ctc_model.audio_projector(frames))
    for name in ("curve.png", "metrics.json"):
        (run / name).write_text("x")
    monkeypatch.setattr(pt, "ASSETS", tmp_path / "assets")
    pt.install_weights(weights, run / "curve.png", run / "metrics.json", "audio")
    installed = load_file(str(tmp_path / "assets" / "pocket.safetensors"))
    assert torch.equal(installed["audio.readout.vocab"], ctc_model.audio_readout.vocab)
    assert installed["audio.linear_1.weight"].dtype == torch.float16
    ctc_model.audio_readout = None
    fresh_projector(ctc_model, seed=5)
    ctc_model.load_projectors(tmp_path / "assets" / "pocket.safetensors")
    assert ctc_model.audio_readout is not None and "audio" in ctc_model.trained
    assert ctc_model.audio_readout.lm is not None and "audio.readout_lm.logp" in installed
    with torch.no_grad():
        assert ctc_model.audio_readout.token_ids(ctc_model.audio_projector(frames)) == before


def test_audio_tokens_with_a_readout_are_the_decoders_embeddings_of_the_words_read(ctc_model, monkeypatch):
    from fusion.model import NOTHING_HEARD
    from fusion.prompt import Audio

    readout = ctc_model.new_audio_readout(torch.tensor([5, 7, 9]))
    table = ctc_model.decoder.get_input_embeddings().weight
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with torch.no_grad():
        monkeypatch.setattr(readout, "token_ids", lambda x: [9, 5, 9])
        assert torch.equal(ctc_model.audio_tokens(Audio(wave)), table[[9, 5, 9]])
        monkeypatch.setattr(readout, "token_ids", lambda x: [])  # noise: no word read
        nothing = ctc_model.tokenizer.encode(NOTHING_HEARD, add_special_tokens=False)
        assert torch.equal(ctc_model.audio_tokens(Audio(wave)), table[nothing])


def test_reading_through_float16_rows_gives_the_float32_logits_and_keeps_one_copy(ctc_model):
    """CTCReadout reads (no grad) through float16 copies of the unit rows and the engine's C++ product, and
    trains through float32: the logits agree to float16 rounding, and reading drops the float32 copy."""
    from fusion.runtime import cpu_ops

    if cpu_ops.load() is None:
        pytest.skip(f"C++ ops not built: {cpu_ops.unavailable_reason()}")
    readout = ctc_model.new_audio_readout(torch.arange(3, ctc_model.decoder.config.vocab_size))
    x = torch.randn(12, readout.blank.shape[0])
    with torch.enable_grad():
        want = readout.logits(x)  # training's path
    with torch.inference_mode():
        got = readout.logits(x)
    assert torch.allclose(got, want.detach(), atol=2e-3 * readout.log_scale.detach().exp().item())
    assert readout._unit is None and readout._packed is not None


def test_greedy_ctc_merges_repeats_and_drops_blanks():
    from fusion.projectors import CTCReadout

    emb = torch.nn.Embedding(10, 4)
    readout = CTCReadout(torch.tensor([3, 8]), emb)
    classes = [1, 1, 0, 1, 2, 2, 0, 0, 2]  # 0 = blank; class c > 0 is vocab[c - 1]
    readout.logits = lambda x: torch.nn.functional.one_hot(torch.tensor(classes), 3).float()
    assert readout.token_ids(torch.zeros(len(classes), 4)) == [3, 3, 8, 8]


def test_mention_sentences_name_every_entity_often_in_new_sentences():
    from app.projector_training import evaluation_sentences
    from fusion.training.speech_data import COUNTRIES, mention_sentences, prompts

    sentences = mention_sentences(1500, seed=0)
    assert sentences == mention_sentences(1500, seed=0) and len(set(sentences)) == 1500
    assert sentences != mention_sentences(1500, seed=1)
    for country in COUNTRIES:
        assert sum(country in s for s in sentences) >= 15, country
    assert not set(sentences) & ({p.text for p in prompts()} | evaluation_sentences())  # carriers, not the questions
    assert all(s[0].isupper() for s in sentences)


def test_an_interrupted_data_build_resumes_to_the_same_data(tiny_omni, tmp_path, monkeypatch):
    """Building the speech data takes an hour here: stopped part way, a second run goes on from its last
    saved chunk (no teacher answers again) and ends with exactly the clips of an uninterrupted build."""
    import soundfile as sf

    import fusion.training.audio_dataset as tr
    import fusion.training.speech_data as sd

    human = tmp_path / "human.wav"
    sf.write(human, tr.speak("Please hold the line.", "en", 150, 50), 16000)
    monkeypatch.setattr(sd, "prompts", lambda seed=0: [sd.Prompt("What is the capital of Chile?", "santiago", "question"),
                                                       sd.Prompt("Tell me a joke.", None, "chit-chat"),
                                                       sd.Prompt("Count to three.", None, "instruction")])
    monkeypatch.setattr(sd, "fortune_sentences", lambda n, seed=0: ["A penny saved is a penny earned."])
    monkeypatch.setattr(sd, "mention_sentences", lambda n, seed=0: ["Alice flew to Chile.", "Bob has two cats."][:n])
    monkeypatch.setattr(sd, "human_recordings", lambda: [(human, "Please hold the line.")])
    monkeypatch.setattr(tr, "FORTUNES_ANSWERED", 1)
    monkeypatch.setattr(tr, "BUILD_CHUNK", 2)
    held_out = {"Tell me a joke."}
    answered = []
    teacher = tr.teacher_answers
    monkeypatch.setattr(tr, "teacher_answers", lambda *a, **k: answered.append(1) or teacher(*a, **k))

    def build(out):
        return tr.build_audio_dataset(tiny_omni, out, held_out, variants=2, seed=5, log=lambda _: None, mentions=2)

    whole = tmp_path / "whole"
    build(whole)
    speak, calls = tr.speak, []

    def speak_then_fail(*a):
        calls.append(a)
        if len(calls) == 6:  # in the second chunk
            raise KeyboardInterrupt
        return speak(*a)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(tr, "speak", speak_then_fail)
    with pytest.raises(KeyboardInterrupt):
        build(resumed)
    assert not (resumed / "meta.json").exists() and len(list((resumed / "partial").glob("chunk*.json"))) == 1
    monkeypatch.setattr(tr, "speak", speak)
    summary = build(resumed)
    assert answered == [1, 1]  # the uninterrupted build and the first try; the resumed run read them back

    meta = json.loads((whole / "meta.json").read_text())
    assert json.loads((resumed / "meta.json").read_text()) == meta and summary["clips"] == len(meta) == 3 * 2 + 1 + 2 + 1
    assert {m["split"] for m in meta if m["text"] == "Tell me a joke."} == {"heldout"}
    a, b = load_file(str(whole / "features.safetensors")), load_file(str(resumed / "features.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed / "partial").exists()


def test_recipe_r4_holds_whole_voices_out_and_uses_festival():
    import fusion.training.speech_data as sd

    r4 = sd.RECIPES["r4"]
    held_bases, held_variants = {"en-gb-x-rp", "en-gb-x-gbcwmd"}, {"f3", "f4", "m5"}
    assert all(v.split("+")[0] in held_bases or v.split("+")[1] in held_variants
               for v in r4.held_out_voices if not v.startswith("festival:"))
    for v in r4.train_voices:  # no held-out voice, nor a held-out variant on any voice
        base, _, variant = v.partition("+")
        assert base not in held_bases and variant not in held_variants, v
    assert len(r4.train_voices) > 600 and not set(r4.festival_voices) & set(r4.held_out_voices)
    rng = np.random.default_rng(0)
    drawn = [r4.voice(i, 0, False, rng) for i in range(400)]
    assert 30 < sum(v.startswith("festival:") for v in drawn) < 100 and len(set(drawn)) > 200
    r3 = sd.RECIPES["r3"]  # the shipped SmolLM2 readout's data: the 21 voices in turn, unchanged
    assert [r3.voice(i, 1, False, rng) for i in range(3)] == ["en-gb-scotland", "en-029", "en-gb-x-gbclan"]
    # the folders the shipped readouts' data were built in, and who asks the teacher
    assert (r3.folder(1500, r3.answers("ctc")), r3.folder(0, "all")) == ("r3-m1500", "r2")
    assert (r4.answers("ctc"), r4.answers("distill"), r4.folder(1500, "none")) == ("none", "all", "r4-m1500-none")


def test_festival_voices_speak_at_16k_with_rate_and_pitch():
    from encoders.speech import speak

    slow, fast = (speak("The train leaves at six.", "festival:kal_diphone", rate, 50) for rate in (120, 190))
    assert fast.dtype == np.float32 and 0.05 < np.abs(fast).max() <= 1.0
    assert len(slow) > 1.3 * len(fast)  # 16 kHz samples: the slower one is longer
    low, high = (speak("Hello there.", "festival:ked_diphone", 150, p) for p in (25, 75))
    assert abs(len(low) - len(high)) < 0.05 * len(low)  # pitch moves, the length stays


def test_a_ctc_build_asks_no_teacher_and_keeps_whole_voices_apart(tiny_omni, tmp_path, monkeypatch):
    """With a 1.5B teacher, answering every prompt would take an hour; CTC trains on transcripts (the
    held-out measures ask the assistant the typed question when they run)."""
    import fusion.training.audio_dataset as tr
    import fusion.training.speech_data as sd

    monkeypatch.setattr(sd, "prompts", lambda seed=0: [sd.Prompt("What is the capital of Chile?", "santiago", "question"),
                                                       sd.Prompt("What is the capital of Peru?", "lima", "question"),
                                                       sd.Prompt("Tell me a joke.", None, "chit-chat")])
    monkeypatch.setattr(sd, "fortune_sentences", lambda n, seed=0: ["A penny saved is a penny earned."])
    monkeypatch.setattr(sd, "human_recordings", lambda: [])
    monkeypatch.setattr(tr, "teacher_answers", lambda *a, **k: pytest.fail("the teacher was asked"))
    held_out = {"What is the capital of Peru?", "Tell me a joke."}
    tr.build_audio_dataset(tiny_omni, tmp_path, held_out, variants=3, seed=1, log=lambda _: None,
                           recipe=sd.RECIPES["r4"], answers="none")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta) == 3 + 2 + 2 + 1 and not any(m["answer_ids"] for m in meta)
    r4 = sd.RECIPES["r4"]
    assert all(m["voice"] in r4.held_out_voices for m in meta if m["split"] == "heldout")
    assert all(m["voice"] in r4.train_voices + r4.festival_voices for m in meta if m["split"] == "train")


def test_everyday_text_spans_many_words_in_many_shapes():
    """r5's open-vocabulary text: WordNet's examples chosen to cover the frequent words, and generated
    sentences whose every frame is heard, with real words in the slots."""
    import re

    from fusion.training import everyday_text as et

    assert [et.number_words(n) for n in (7, 40, 42, 342, 900)] == [
        "seven", "forty", "forty two", "three hundred and forty two", "nine hundred"]
    assert [et.plural(w, {"mouse": "mice"}) for w in ("mouse", "fox", "berry", "day", "cat")] == [
        "mice", "foxes", "berries", "days", "cats"]
    frequent = ["the", "cat", "milk", "dog", "bark", "snow"]
    text = ["The cat drank milk.", "The cat sat.", "The cat ran.", "The cat hid.", "A dog may bark.", "The end."]
    kept = et.covering(text, frequent, limit=10, per_word=2)
    assert "The end." not in kept and "A dog may bark." in kept  # "the" alone was heard enough
    assert sum("cat" in s for s in kept) <= 3  # kept while "cat" or "the" was still new
    words = __import__("fusion.training.vocabulary", fromlist=["english_words"]).english_words(20000)
    made = et.generated_sentences(600, words, seed=3)
    assert made == et.generated_sentences(600, words, seed=3) and len(set(made)) == 600
    assert len({s.split()[0] for s in made}) > 20 and not re.search(r"\ba [aeiou]", " ".join(made))
    assert all(s[0].isupper() and s[-1] in ".?!" for s in made)
    if et.WORDNET.is_dir():  # setup.sh installs wordnet-base and bsdgames
        assert len(et.wordnet_examples()) > 20000 and len(et.quiz_capitals()) > 100
        assert len({w for s in made for w in re.findall(r"[a-z]+", s.lower())}) > 600
        assert sd_folder("r5") == "r5-m1000-none"


def sd_folder(name: str) -> str:
    import fusion.training.speech_data as sd

    r = sd.RECIPES[name]
    return r.folder(1000, r.answers("ctc"))


def test_the_steps_time_sums_the_pieces_of_a_resumed_run(tmp_path):
    """A resumed run's log restarts its clock: the metrics' steps_s adds the pieces, not the last one."""
    from app.projector_training import steps_seconds

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": i + 1, "elapsed_s": e}) + "\n" for i, e in enumerate([1, 2, 3, 0.5, 1.5])))
    assert steps_seconds(log) == 4.5
