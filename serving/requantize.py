"""Requantizes a GGUF file with llama.cpp's own quantizer (llama-cpp-python's binding).

``python -I path/to/requantize.py SOURCE TARGET TYPE`` (TYPE: a llama.cpp file type such
as ``Q8_0``); exits with llama.cpp's status, 0 when TARGET is written.

Run as its own process by ``serving.embedded.default_gguf``: llama.cpp logs a line for
every tensor to stderr, which a command's output must not carry, and importing
``llama_cpp`` loads the library (0.4 s) that a minionflow process otherwise never needs.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import llama_cpp

    source, target, kind = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.allow_requantize = True  # the source is quantized already
    return int(llama_cpp.llama_model_quantize(source.encode(), target.encode(), params))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
