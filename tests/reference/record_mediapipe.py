"""Record reference outputs of MediaPipe's hand and face models from a real TFLite runtime, once.

The runtime (`ai-edge-litert`) cannot live in .venv (it is one more heavy runtime the app does not
need), so this runs in two steps and needs a throwaway environment:

    python3.11 -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert==2.3.0 numpy
    .venv/bin/python tests/reference/record_mediapipe.py --litert /tmp/litert/bin/python

Step 1 (here, .venv): the inputs: seeded noise, and our own preprocessing of real photos
(letterboxed palm and face input, rotated landmark crop). Step 2 (the throwaway runtime): run the
models on them. The result, tests/reference/mediapipe_reference.npz, keeps the outputs and the SHA-256
of each input; tests/test_hands.py and tests/test_faces.py rebuild the inputs and compare our PyTorch
port against these outputs.
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "mediapipe_reference.npz"

RUNNER = r'''
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
inputs = np.load(sys.argv[1]); out = {}
for model, path in (arg.split("=", 1) for arg in sys.argv[3:]):
    it = Interpreter(model_path=path); it.allocate_tensors()
    inp, outs = it.get_input_details()[0], it.get_output_details()
    for key in inputs.files:
        if key.startswith(model + "/"):
            it.set_tensor(inp["index"], inputs[key]); it.invoke()
            for j, o in enumerate(outs):
                out[f"{key}/out{j}"] = it.get_tensor(o["index"])
np.savez_compressed(sys.argv[2], **out)
'''


def reference_inputs() -> dict[str, np.ndarray]:
    """name -> float32 NHWC input, built exactly as the tests build them."""
    sys.path.insert(0, str(HERE.parent.parent))
    from tests.test_faces import face_inputs
    from tests.test_hands import model_inputs

    return {**model_inputs(), **face_inputs()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--litert", required=True, help="python of a venv with ai-edge-litert installed")
    args = ap.parse_args()
    from fusion.weights.fetch import fetch
    from fusion.weights.mediapipe import FACE_DETECTOR, ensure_hand_models

    face = fetch(FACE_DETECTOR)
    palm, landmark = ensure_hand_models("lite")
    inputs = reference_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **inputs)
        subprocess.run([args.litert, "-c", RUNNER, str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz"),
                        f"palm={palm}", f"landmark={landmark}", f"face={face}"], check=True)
        # float16 keeps the file small (~0.3 MB); its rounding (< 0.02 on the palm's ~100-pixel box
        # values) is far inside the tests' tolerances
        outputs = {k: v.astype(np.float16) for k, v in np.load(Path(tmp) / "out.npz").items()}
    for key, x in inputs.items():
        outputs[f"{key}/sha256"] = np.array(hashlib.sha256(x.tobytes()).hexdigest())
    np.savez_compressed(OUT, **outputs)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, {len(inputs)} inputs)")


if __name__ == "__main__":
    main()
