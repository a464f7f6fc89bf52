"""Projectors, prompt building, splicing and generation on tiny random models."""

import numpy as np
import pytest
import torch

from fusion.model import splice
from fusion.projectors import AudioProjector, AudioProjectorConfig, VisionProjector, VisionProjectorConfig
from fusion.prompt import Audio, Image, build_prompt_ids
from fusion.runtime.generate import SamplingConfig, generate_tokens, sample, stream_text
from fusion.runtime.serving import Runtime


def photo(seed: int, h: int = 50, w: int = 70) -> Image:
    return Image(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def clip(seconds: float, seed: int = 0) -> Audio:
    return Audio((0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32))


# -- projectors -------------------------------------------------------------------------------

def test_audio_projector_gives_6_25_tokens_per_second_of_speech():
    proj = AudioProjector(AudioProjectorConfig(in_dim=16, out_dim=24, stack=8, hidden=32))
    frames = torch.randn(200, 16)  # 4 s at Whisper's 50 frames/s
    out = proj(frames)
    assert out.shape == (25, 24)
    assert proj.num_tokens(200) == 25
    assert proj(torch.randn(201, 16)).shape == (26, 24)  # a partial last group still counts


def test_audio_projector_stacks_consecutive_frames():
    proj = AudioProjector(AudioProjectorConfig(in_dim=4, out_dim=8, stack=2, hidden=16))
    seen = {}
    proj.ln_pre.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    frames = torch.arange(12.0).reshape(3, 4)
    proj(frames)
    assert torch.equal(seen["x"][0], frames[:2].reshape(-1))  # frames 0 and 1 side by side
    assert torch.equal(seen["x"][1], torch.cat([frames[2], torch.zeros(4)]))  # padded last group


def test_vision_projector_2x2_merge_quarters_tokens_and_joins_neighbours():
    proj = VisionProjector(VisionProjectorConfig(in_dim=1, out_dim=8, merge=2, hidden=16))
    seen = {}
    proj.linear_1.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    grid = (7, 7)
    feats = torch.arange(49.0).reshape(49, 1)  # value = row * 7 + col
    out = proj(feats, grid)
    assert out.shape == (16, 8) and proj.num_tokens(grid) == 16
    assert seen["x"][0].tolist() == [0, 1, 7, 8]  # the top-left 2x2 block
    assert seen["x"][3].tolist() == [6, 0, 13, 0]  # right edge: padded column


def test_vision_projector_without_merge_keeps_one_token_per_patch():
    proj = VisionProjector(VisionProjectorConfig(in_dim=12, out_dim=8, merge=1, hidden=16))
    assert proj(torch.randn(49, 12), (7, 7)).shape == (49, 8)


# -- prompt and splice --------------------------------------------------------------------------

def test_prompt_expands_each_media_part_to_its_own_count_in_order(tiny_tokenizer):
    img, aud = tiny_tokenizer.convert_tokens_to_ids(["<jupyter_code>", "<jupyter_output>"])
    messages = [
        {"role": "user", "content": [photo(0), "what is in this picture", clip(1.0)]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": [clip(2.0), photo(1), "and that sound"]},
    ]
    p = build_prompt_ids(tiny_tokenizer, messages, [3, 5, 7, 2], {Image: img, Audio: aud})
    runs, prev = [], None
    for t in p.ids:
        if t in (img, aud):
            if prev == t:
                runs[-1][1] += 1
            else:
                runs.append([t, 1])
        prev = t
    assert runs == [[img, 3], [aud, 5], [aud, 7], [img, 2]]
    text = tiny_tokenizer.decode([t for t in p.ids if t not in (img, aud)])
    assert "what is in this picture" in text and "and that sound" in text
    # ends with the generation prompt, so the model answers as the assistant
    assert tiny_tokenizer.convert_ids_to_tokens(p.ids[-2:]) == ["<|im_start|>", "assistant"]


def test_splice_puts_features_at_placeholders_and_leaves_text_alone():
    ids = torch.tensor([5, 9, 9, 6, 8, 8, 8, 9, 7])
    embeds = torch.randn(9, 4)
    img, aud = torch.randn(3, 4), torch.randn(3, 4)
    out = splice(embeds, ids, {9: img, 8: aud})
    assert torch.equal(out[[1, 2, 7]], img) and torch.equal(out[[4, 5, 6]], aud)
    assert torch.equal(out[[0, 3, 8]], embeds[[0, 3, 8]])


def test_splice_raises_when_counts_differ():
    with pytest.raises(ValueError, match="placeholder"):
        splice(torch.randn(4, 2), torch.tensor([1, 9, 9, 2]), {9: torch.randn(3, 2)})


def test_conversation_with_several_images_and_clips_splices_each_at_its_run(tiny_omni):
    torch.manual_seed(0)
    media = [photo(0), clip(1.0, 1), photo(1, 90, 40), clip(0.5, 2)]
    messages = [{"role": "user", "content": [media[0], "what is in this picture", media[1]]},
                {"role": "assistant", "content": "a cat"},
                {"role": "user", "content": [media[2], media[3], "describe both"]}]
    with torch.no_grad():
        embeds = tiny_omni.embed_conversation(messages)[0]
        expected = [tiny_omni.image_tokens(m) if isinstance(m, Image) else tiny_omni.audio_tokens(m) for m in media]
    img_id, aud_id = tiny_omni.placeholder_ids[Image], tiny_omni.placeholder_ids[Audio]
    # rebuild the ids the same way to find the runs
    p = build_prompt_ids(tiny_omni.tokenizer, messages, [e.shape[0] for e in expected], tiny_omni.placeholder_ids)
    ids = torch.tensor(p.ids)
    assert embeds.shape[0] == len(p.ids)
    for kind_id, rows in ((img_id, [expected[0], expected[2]]), (aud_id, [expected[1], expected[3]])):
        torch.testing.assert_close(embeds[ids == kind_id], torch.cat(rows))
    text_rows = ~((ids == img_id) | (ids == aud_id))
    torch.testing.assert_close(embeds[text_rows], tiny_omni.decoder.get_input_embeddings()(ids[text_rows]))
    assert expected[1].shape[0] == 7  # 1 s -> 50 frames -> ceil(50 / 8)


# -- generation ---------------------------------------------------------------------------------

def test_streaming_greedy_equals_transformers_generate(tiny_decoder, tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer.encode("hello world what is the cat", add_special_tokens=False)])
    embeds = tiny_decoder.get_input_embeddings()(ids)
    ours = list(generate_tokens(tiny_decoder, embeds, set(), SamplingConfig(max_new_tokens=20)))
    ref = tiny_decoder.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None,
                                pad_token_id=tiny_tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    assert ours == ref
    streamed = "".join(stream_text(tiny_tokenizer, iter(ours)))
    assert streamed == tiny_tokenizer.decode(ours, skip_special_tokens=True)


def test_generation_stops_at_eos_and_at_max_tokens(tiny_decoder, tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer.encode("hello world", add_special_tokens=False)])
    embeds = tiny_decoder.get_input_embeddings()(ids)
    free = list(generate_tokens(tiny_decoder, embeds, set(), SamplingConfig(max_new_tokens=6)))
    assert len(free) == 6
    stopped = list(generate_tokens(tiny_decoder, embeds, {free[2]}, SamplingConfig(max_new_tokens=6)))
    assert stopped == free[:free.index(free[2])]


def test_stop_string_ends_the_stream_and_is_not_shown(tiny_tokenizer):
    words = tiny_tokenizer.encode("hello world red green blue", add_special_tokens=False)
    assert "".join(stream_text(tiny_tokenizer, iter(words), stop=("green",))) .strip() == "hello world red"


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus():
    logits = torch.tensor([3.0, 2.9, -5.0, -5.0])
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = [sample(logits, 1.0, 1.0, gen) for gen in [g()] for _ in range(20)]
    b = [sample(logits, 1.0, 1.0, gen) for gen in [g()] for _ in range(20)]
    assert a == b
    draws = {sample(logits, 1.0, 0.5, g()) for _ in range(20)}
    assert draws == {0}  # the top token alone already holds half the mass
    assert sample(logits, 0.0, 1.0) == 0


def test_a_follow_up_turn_does_not_encode_earlier_media_again(tiny_omni):
    calls = []
    hook = tiny_omni.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = [photo(5), "what is in this picture"]
        turn1 = [{"role": "user", "content": first}]
        with torch.no_grad():
            runtime = Runtime(tiny_omni)  # the media cache is the runtime's
            a = runtime.embed(turn1)
            turn2 = turn1 + [{"role": "assistant", "content": "a cat"},
                             {"role": "user", "content": [photo(6), "and this"]}]
            b = runtime.embed(turn2)
        assert len(calls) == 2  # one pass per distinct photo, not three
        torch.testing.assert_close(b[0, : a.shape[1] - 2], a[0, :-2])  # the first turn embeds the same
    finally:
        hook.remove()


def test_text_readout_is_the_decoder_embedding_of_the_photos_sentences(tiny_omni):
    """Without a trained vision projector, an image is the decoder's embeddings of the sentences about
    it (fusion/photo_text.py), which name the head's top class; loading trained vision weights switches
    back to the learned projector."""
    import dataclasses

    from fusion.photo_text import photo_text

    px = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        _, logits = tiny_omni.vision_tower(tiny_omni.vision_tower.pixels([px]))
        tokens = tiny_omni.image_tokens(Image(px))
        said = photo_text(tiny_omni.photo_facts(Image(px)))
    top = tiny_omni.vision_tower.labels()[int(logits[0].argmax())].split(",")[0].strip()
    assert said.startswith(f"A photo of a {top} (") or said.startswith(f"A photo of an {top} (")
    ids = tiny_omni.tokenizer(" " + said, add_special_tokens=False)["input_ids"]
    assert torch.equal(tokens, tiny_omni.decoder.get_input_embeddings().weight[ids])
    assert not any(k.startswith("_lazy") for k in tiny_omni.state_dict())  # borrowed, never saved
    learned = dataclasses.replace(tiny_omni.config, vision_readout="learned")
    saved, tiny_omni.config = tiny_omni.config, learned
    try:
        with torch.no_grad():
            assert tiny_omni.image_tokens(Image(px)).shape[0] == tiny_omni.vision_projector.num_tokens(
                tiny_omni.vision_tower.grid)
    finally:
        tiny_omni.config = saved


def test_a_projector_file_of_another_width_loads_at_its_own_width(tiny_omni, tmp_path):
    """A trained audio projector whose hidden width differs from the config's (an older or larger
    run) is rebuilt at the file's width, not refused; the loaded model uses those weights."""
    from safetensors.torch import save_file

    c = tiny_omni.audio_projector.config
    torch.manual_seed(1)
    other = AudioProjector(AudioProjectorConfig(c.in_dim, c.out_dim, c.stack, hidden=c.hidden * 2))
    save_file({f"audio.{k}": v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "p.safetensors"))
    configured = tiny_omni.audio_projector
    try:
        tiny_omni.load_projectors(tmp_path / "p.safetensors")
        assert tiny_omni.audio_projector.config.hidden == c.hidden * 2 and "audio" in tiny_omni.trained
        frames = torch.randn(3 * c.stack, c.in_dim)
        with torch.no_grad():
            torch.testing.assert_close(tiny_omni.audio_projector(frames), other(frames))
    finally:  # the fixture is shared
        tiny_omni.audio_projector, tiny_omni.trained = configured, set()
