"""The Gradio page. It only wires components to the functions in app/chat.py."""

from __future__ import annotations

import gradio as gr

from app.chat import Conversation, ModelHolder, reply, user_content
from encoders.errors import InputError
from fusion.generate import SamplingConfig


def build(holder: ModelHolder) -> gr.Blocks:
    with gr.Blocks(title="pocket-omni") as demo:
        gr.Markdown("# pocket-omni\nAsk about a photo, a recording, or just type.")
        conv = gr.State(None)  # a Conversation per browser session, made on first use
        chatbot = gr.Chatbot(label="Conversation", height=420)
        with gr.Row():
            image = gr.Image(label="Photo", sources=["upload", "webcam", "clipboard"], type="numpy")
            audio = gr.Audio(label="Voice", sources=["microphone", "upload"], type="numpy")
        text = gr.Textbox(label="Message", placeholder="What is in this picture?")
        with gr.Row():
            mode = gr.Radio(["e2e", "cascade"], value="cascade", label="Mode")
            max_tokens = gr.Slider(16, 512, value=256, step=16, label="Max tokens")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
        with gr.Row():
            send = gr.Button("Send", variant="primary")
            clear = gr.Button("Clear")
        status = gr.Markdown()

        def on_send(c: Conversation | None, msg, img, aud, m, n, temp):
            c = c or Conversation()
            try:
                assistant = holder.get()
                content = user_content(msg, img, aud)
                sampling = SamplingConfig(max_new_tokens=int(n), temperature=float(temp))
                for _ in reply(assistant, c, content, m, sampling):
                    yield c, c.display, "", ""
                yield c, c.display, "", ""
            except InputError as err:
                yield c, c.display, msg, f"**Could not answer:** {err}"

        send.click(on_send, [conv, text, image, audio, mode, max_tokens, temperature],
                   [conv, chatbot, text, status])
        text.submit(on_send, [conv, text, image, audio, mode, max_tokens, temperature],
                    [conv, chatbot, text, status])
        clear.click(lambda: (None, [], ""), None, [conv, chatbot, status])
    return demo
