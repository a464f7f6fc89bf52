"""The Gradio page: five tabs wired to plain functions (app/chat.py, app/live.py, app/mushroom.py,
app/rps.py). Nothing here knows about models beyond `ModelHolder.get()`.

Every handler turns bad input into a message on the page (InputError), never an exception that
reaches Gradio; per-browser-session state lives in gr.State, the model is shared.
"""

from __future__ import annotations

import gradio as gr

from PIL import UnidentifiedImageError

from app.chat import Conversation, ModelHolder, Unreadable, read_aloud, regenerate, reply, user_content
from app.gestures import hand_tracker
from app.live import LiveSession
from encoders.errors import InputError
from fusion.modes import DEFAULT_MODE, MODES
from fusion.presets import preset
from fusion.runtime.generate import SamplingConfig, Timings

LIVE_EVERY = 0.05  # seconds between frames sent by the browser; slower frames are dropped, not queued
PERSONAS = ["", "Answer as a poet, in two short lines.", "Answer as a stern teacher.",
            "Answer in one short sentence."]


REGENERATE_TEMPERATURE = 0.8  # greedy decoding would give the same answer again


def _error(err: Exception) -> str:
    return f"**Could not do that:** {err}"


class PhotoInput(gr.Image):
    """gr.Image whose upload of a file that is not an image (a text file named .png) becomes an
    Unreadable marker the handlers answer with a one-line message, instead of Gradio's raw error toast
    (which showed server paths) and a tab stuck on a broken preview."""

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return Unreadable(getattr(payload, "orig_name", None) or "that file")

    def get_block_name(self) -> str:
        return "image"  # the frontend's component


def _photo_check(img):
    """On upload: a file that is no image is dropped at once, with the message."""
    if isinstance(img, Unreadable):
        return None, _error(img.error())
    return gr.skip(), ""


def _notes(notes: list[str]) -> str:
    """What the assistant heard and saw, for the status line."""
    return "  \n".join(f"_{n}_" for n in notes if n.startswith(("heard", "saw")))


def _with_notes(notes: list[str], text: str) -> str:
    shown = _notes(notes)
    return f"{shown}\n\n{text}" if shown else text


def _player(audio) -> dict:
    """The read-aloud player: shown, and playing, only when there is something to hear."""
    return gr.update(value=audio, visible=audio is not None)


# Gradio labels a streaming webcam's start button "Record" and has no option to change it; a camera
# tab records nothing, so the page renames it (Gradio re-renders the button: watch for it).
CAMERA_BUTTON_JS = """() => {
  const rename = () => document.querySelectorAll('#live-cam button, #rps-cam button').forEach(b => {
    const walk = document.createTreeWalker(b, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode())
      if (n.textContent.trim() === 'Record') n.textContent = n.textContent.replace('Record', 'Start camera');
  });
  rename();
  new MutationObserver(rename).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def build(holder: ModelHolder) -> gr.Blocks:
    with gr.Blocks(title="pocket-omni") as demo:
        gr.Markdown("# pocket-omni\nA local camera-and-microphone assistant. "
                    "Chat about photos and recordings, play rock-paper-scissors, ask what a mushroom might be. "
                    f"Language model: {preset().title} (`--model` picks another).", elem_id="banner")
        loading = gr.Markdown(_loading_text(holder))
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                _chat_tab(holder)
            with gr.Tab("Live camera", id="live"):
                _live_tab(holder)
            with gr.Tab("Rock-paper-scissors", id="rps"):
                _game_tab(holder)
            with gr.Tab("Mushrooms", id="mushroom"):
                _mushroom_tab(holder)
            with gr.Tab("Spoken question", id="spoken"):
                _spoken_tab(holder)
        demo.load(lambda: _loading_text(holder), None, loading, api_name="model_status")
        demo.load(None, None, None, js=CAMERA_BUTTON_JS)
        gr.Timer(2.0).tick(lambda: _loading_text(holder), None, loading, api_visibility="private")
    return demo


def _loading_text(holder: ModelHolder) -> str:
    state = holder.state()
    if state == "ready":
        return ""
    if state == "loading":
        return (f"_The model is loading: {holder.loading_text()}. The page works meanwhile: a message sent now "
                f"waits for the model and is answered when it is ready._")
    return f"**The model failed to load:** {holder.error}"


def _sampling(n, temp, top_p) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=int(n), temperature=float(temp), top_p=float(top_p))


# -- chat -----------------------------------------------------------------------------------------------

def _chat_handlers(holder: ModelHolder):
    """The Chat tab's Send and Regenerate, streaming (conversation, chatbot, ..., status, read-aloud)."""

    def on_send(c, msg, img, aud, sys_prompt, m, n, temp, tp, speak):
        c = c or Conversation()
        try:
            content = user_content(msg, img, aud)
            for note in holder.waiting():
                yield c, c.display, msg, gr.skip(), gr.skip(), note, _player(None)
            notes: list[str] = []
            for _ in reply(holder.get(), c, content, m, _sampling(n, temp, tp), system=sys_prompt, notes=notes):
                yield c, c.display, "", None, None, "", _player(None)
            yield c, c.display, "", None, None, _notes(notes), _player(read_aloud(c.last_answer()) if speak else None)
        except InputError as err:  # a photo that could not be read is dropped; the rest stays to fix and resend
            yield c, c.display, msg, None if isinstance(img, Unreadable) else img, aud, _error(err), _player(None)

    def on_regen(c, sys_prompt, m, n, temp, tp, speak):
        c = c or Conversation()
        resampled = float(temp) == 0
        why = f"_Regenerated with sampling (temperature {REGENERATE_TEMPERATURE}): greedy decoding would give the " \
              f"same answer again._" if resampled else ""
        sampling = _sampling(n, REGENERATE_TEMPERATURE if resampled else temp, tp)
        try:
            for _ in regenerate(holder.get(), c, m, sampling, system=sys_prompt):
                yield c, c.display, "", _player(None)
            yield c, c.display, why, _player(read_aloud(c.last_answer()) if speak else None)
        except InputError as err:
            yield c, c.display, _error(err), _player(None)

    return on_send, on_regen


def _chat_tab(holder: ModelHolder) -> None:
    conv = gr.State(None)  # a Conversation per browser session, made on first use
    chatbot = gr.Chatbot(label="Conversation", height=380, elem_id="chatbot")
    with gr.Row():
        image = PhotoInput(label="Photo (upload, webcam snapshot, paste)", sources=["upload", "webcam", "clipboard"],
                           type="numpy", elem_id="chat-image")
        audio = gr.Audio(label="Voice (record or upload; any rate, resampled)", sources=["microphone", "upload"],
                         type="numpy", elem_id="chat-audio")
    text = gr.Textbox(label="Message", placeholder="What is in this picture?", elem_id="chat-text")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", elem_id="chat-stop")
        regen = gr.Button("Regenerate", elem_id="chat-regen")
        clear = gr.Button("Clear", elem_id="chat-clear")
    status = gr.Markdown(elem_id="chat-status")
    spoken = gr.Audio(label="Answer read aloud", visible=False, interactive=False, autoplay=True)
    with gr.Accordion("Persona and settings", open=False):
        persona = gr.Dropdown(PERSONAS, value="", allow_custom_value=True,
                              label="System prompt / persona (type your own)")
        mode = gr.Radio(list(MODES), value=DEFAULT_MODE, label="Mode",
                        info="e2e: photos and speech go into the LLM as embeddings; "
                             "cascade: Whisper's transcript and ImageNet labels go in as text; "
                             "auto: speech transcribed, photos as embeddings (each the better one today)")
        max_tokens = gr.Slider(16, 512, value=200, step=16, label="Max tokens")
        temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Top-p")
        aloud = gr.Checkbox(False, label="Read answers aloud (espeak-ng)")

    on_send, on_regen = _chat_handlers(holder)
    inputs = [conv, text, image, audio, persona, mode, max_tokens, temperature, top_p, aloud]
    outputs = [conv, chatbot, text, image, audio, status, spoken]
    ev_send = send.click(on_send, inputs, outputs, concurrency_limit=4, api_name="chat_send")
    ev_submit = text.submit(on_send, inputs, outputs, concurrency_limit=4, api_visibility="private")
    ev_regen = regen.click(on_regen, [conv, persona, mode, max_tokens, temperature, top_p, aloud],
                           [conv, chatbot, status, spoken], concurrency_limit=4, api_name="chat_regenerate")
    stop.click(lambda c: (c, c.display if c else [], "_Stopped._"), conv, [conv, chatbot, status],
               cancels=[ev_send, ev_submit, ev_regen], api_name="chat_stop")
    clear.click(lambda: (None, [], "", _player(None), "", None, None), None,
                [conv, chatbot, status, spoken, text, image, audio], api_name="chat_clear")
    image.upload(_photo_check, image, [image, status], api_visibility="private")


# -- live camera and the game ---------------------------------------------------------------------------

def _camera(holder: ModelHolder, prefix: str, mode, extra_outputs: list, extra: callable) -> gr.State:
    """The webcam stream in, the annotated frame and the readout out; `extra(session)` fills
    extra_outputs (the game's panel). Returns the per-browser LiveSession state."""
    session = gr.State(None)
    with gr.Row():
        cam = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy", elem_id=f"{prefix}-cam")
        shown = gr.Image(label="What the assistant sees", type="numpy", interactive=False, elem_id=f"{prefix}-out")
    readout = gr.Markdown("_Start the camera (allow it in the browser when asked)._", elem_id=f"{prefix}-readout")

    def on_frame(s, frame, m):
        try:
            s = s or _live_session(holder)
            out, info = s.process(frame, m)
            return (s, out, info.readout(), *extra(s))
        except InputError as err:
            return (s, None, _error(err), *[""] * len(extra_outputs))

    outputs = [session, shown, readout, *extra_outputs]
    # Gradio's webcam stream sends the newest frame once the previous one is answered, so no queue of
    # stale frames builds up (measured: latency stays one frame's processing time). Note: passing
    # trigger_mode="always_last" here stops the stream after its first frame (Gradio 6.31).
    cam.stream(on_frame, [session, cam, mode], outputs, stream_every=LIVE_EVERY, show_progress="hidden",
               api_visibility="private")
    # the same handler for API clients (gradio_client cannot drive a stream): one frame per call
    still = gr.Image(visible=False, type="numpy")
    still.change(on_frame, [session, still, mode], outputs, api_name=f"{prefix}_frame", show_progress="hidden")
    return session


def _live_session(holder: ModelHolder) -> LiveSession:
    return LiveSession(tracker=hand_tracker(), classify=lambda px: holder.get().classify_image(px, 20))


def _live_tab(holder: ModelHolder) -> None:
    mode = gr.Radio([("Hands and gestures", "hands"), ("Mushroom guess", "mushroom")], value="hands",
                    label="What to look for", render=False)
    _camera(holder, "live", mode, [], lambda s: ())
    mode.render()
    gr.Markdown("Mushroom guesses are guesses: **never eat a wild mushroom on the strength of a photo**; "
                "if someone ate one, call poison control or emergency services now.")


def _game_tab(holder: ModelHolder) -> None:
    panel = gr.Markdown("Press **Play a round**, then show rock, paper or scissors when the countdown says "
                        "*shoot!*. I lock in my move before the countdown starts.", elem_id="rps-panel", render=False)
    session = _camera(holder, "rps", gr.State("rps"), [panel], lambda s: (s.game_text(),))
    with gr.Row():
        best_of = gr.Dropdown([1, 3, 5, 7], value=3, label="Best of")
        play = gr.Button("Play a round", variant="primary", elem_id="rps-play")
        new = gr.Button("New match", elem_id="rps-new")
    panel.render()

    def on_play(s, n):
        try:
            s = s or _live_session(holder)
            if s.match.best_of != int(n) and not s.match.history:
                s.new_match(int(n))
            s.start_round()
            return s, s.game_text()
        except (InputError, RuntimeError) as err:
            return s, _error(err)

    def on_new(s, n):
        s = s or _live_session(holder)
        s.new_match(int(n))
        return s, s.game_text()

    play.click(on_play, [session, best_of], [session, panel], api_name="rps_play")
    new.click(on_new, [session, best_of], [session, panel], api_name="rps_new_match")


# -- mushrooms ------------------------------------------------------------------------------------------

def _mushroom_tab(holder: ModelHolder) -> None:
    photo_state = gr.State(None)  # the last photo, so a follow-up question is about it
    gr.Markdown("Show a mushroom (upload or webcam snapshot) and ask. Answers come from a curated knowledge "
                "base, never from the language model: candidates, dangerous look-alikes, what to check. "
                "**A photo can never tell you a mushroom is safe to eat.**")
    with gr.Row():
        image = PhotoInput(label="Mushroom photo", sources=["upload", "webcam", "clipboard"], type="numpy",
                           elem_id="mushroom-image")
        chat = gr.Chatbot(label="Mushroom answers", height=360, elem_id="mushroom-chat")
    question = gr.Textbox(label="Question", placeholder="What mushroom is this?", elem_id="mushroom-text")
    ask = gr.Button("Ask", variant="primary", elem_id="mushroom-ask")
    status = gr.Markdown()

    def on_ask(img, last, q, history):
        history = list(history or [])
        if isinstance(img, Unreadable):
            return last, history, q, _error(img.error())
        pixels = img if img is not None else last
        if pixels is None:
            return last, history, q, "**Add a photo first** (upload one or take a webcam snapshot)."
        try:
            content = user_content(q or "What mushroom is this?", pixels)
            report = holder.get().identify(content[0].pixels, q or "")
        except InputError as err:
            return last, history, q, _error(err)
        history += [{"role": "user", "content": q or "What mushroom is this?"},
                    {"role": "assistant", "content": report.text}]
        return pixels, history, "", ""

    ask.click(on_ask, [image, photo_state, question, chat], [photo_state, chat, question, status],
              api_name="mushroom_ask")
    question.submit(on_ask, [image, photo_state, question, chat], [photo_state, chat, question, status],
                    api_visibility="private")
    image.upload(_photo_check, image, [image, status], api_visibility="private")


# -- spoken questions -----------------------------------------------------------------------------------

def _spoken_tab(holder: ModelHolder) -> None:
    gr.Markdown("Record a question (or upload a recording) and get a streamed answer. In e2e mode the speech "
                "itself is the prompt, the way Qwen-Audio takes it; cascade transcribes it first.")
    with gr.Row():
        audio = gr.Audio(label="Your question", sources=["microphone", "upload"], type="numpy",
                         elem_id="spoken-audio")
        with gr.Column():
            # a recording alone: "auto" would route it as "cascade"
            mode = gr.Radio([m for m in MODES if m != "auto"], value="cascade", label="Mode",
                            info="e2e: the speech itself is the prompt, the way Qwen-Audio takes it, but it "
                                 "understands few questions yet (see the model card), and the safety gate "
                                 "reads it with Whisper too; cascade: transcribed by Whisper first")
            aloud = gr.Checkbox(True, label="Read the answer aloud")
            go = gr.Button("Answer", variant="primary", elem_id="spoken-go")
    answer = gr.Markdown(elem_id="spoken-answer")
    spoken = gr.Audio(label="Answer read aloud", interactive=False, autoplay=True, visible=False,
                      elem_id="spoken-reply")

    def on_go(aud, m, speak):
        try:
            content = user_content(None, None, aud)
            yield "_Listening..._", _player(None)  # the last answer goes at once
            for note in holder.waiting():
                yield note, _player(None)
            timings, text = Timings(), ""
            for piece in holder.get().chat([{"role": "user", "content": content}], m, SamplingConfig(max_new_tokens=160),
                                           timings):
                text += piece
                yield _with_notes(timings.notes, text), _player(None)
            yield _with_notes(timings.notes, text or "_(no answer)_"), _player(read_aloud(text) if speak and text else None)
        except InputError as err:
            yield _error(err), _player(None)

    go.click(on_go, [audio, mode, aloud], [answer, spoken], concurrency_limit=4, api_name="spoken_answer")
    audio.stop_recording(on_go, [audio, mode, aloud], [answer, spoken], concurrency_limit=4, api_visibility="private")
