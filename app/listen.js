() => {
  // The Spoken tab's microphone, heard while it records: every half second the recording so far goes to
  // POST /v1/pocket/listen, which hears it and prefills the conversation (fusion/assistant.py: listen), so
  // the answer to the finished recording comes sooner. Gradio's own recorder keeps the whole recording
  // and asks the question as before; this is a second reader of the same microphone, and when it fails
  // (no AudioContext, no permission) the question is answered as it would have been, only later.
  const EVERY_MS = 500, RATE = 16000;
  let running = null;
  const mode = () => (document.querySelector('#spoken-mode input:checked') || {}).value || 'cascade';
  const wav = (samples) => {  // mono float -> 16-bit WAV, base64
    const n = samples.length, view = new DataView(new ArrayBuffer(44 + 2 * n));
    const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
    text(0, 'RIFF'); view.setUint32(4, 36 + 2 * n, true); text(8, 'WAVEfmt ');
    view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);  // PCM, mono
    view.setUint32(24, RATE, true); view.setUint32(28, 2 * RATE, true);  // samples and bytes per second
    view.setUint16(32, 2, true); view.setUint16(34, 16, true); text(36, 'data'); view.setUint32(40, 2 * n, true);
    for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, samples[i])) * 32767, true);
    const bytes = new Uint8Array(view.buffer);
    let binary = '';
    for (let i = 0; i < bytes.length; i += 8192) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(binary);
  };
  const start = async () => {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const context = new AudioContext({sampleRate: RATE});
    const source = context.createMediaStreamSource(stream), tap = context.createScriptProcessor(4096, 1, 1);
    const pieces = [], recording = 'rec-' + Math.random().toString(36).slice(2);
    tap.onaudioprocess = (e) => pieces.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    source.connect(tap); tap.connect(context.destination);
    let sending = false;
    const timer = setInterval(async () => {
      if (sending || !pieces.length) return;  // one request at a time: the newest recording goes next
      sending = true;
      const all = new Float32Array(pieces.reduce((n, p) => n + p.length, 0));
      pieces.reduce((at, p) => (all.set(p, at), at + p.length), 0);
      const content = [{type: 'input_audio', input_audio: {data: wav(all), format: 'wav'}}];
      try {
        await fetch('/v1/pocket/listen', {method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({model: 'pocket-' + mode(), recording, messages: [{role: 'user', content}]})});
      } catch (err) { /* the answer comes anyway, only later */ }
      sending = false;
    }, EVERY_MS);
    running = {stream, context, timer};
  };
  const stop = () => {
    if (!running) return;
    clearInterval(running.timer);
    running.stream.getTracks().forEach((t) => t.stop());
    running.context.close();
    running = null;
  };
  document.addEventListener('click', (e) => {
    const button = e.target.closest && e.target.closest('#spoken-audio button');
    if (!button) return;
    if (/Record/.test(button.textContent) && !running) start().catch(() => { running = null; });
    else if (/Stop/.test(button.textContent)) stop();
  }, true);
}
