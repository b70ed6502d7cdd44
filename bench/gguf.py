"""GGUF header reading: scalar metadata keys of a ``.gguf`` file, and llama.cpp's file-type names.

Pure standard library, no llama.cpp needed: only the header's key/value section is read (tensor data is
never touched), so this is instant even for multi-GB files.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: Path, keys: tuple[str, ...] = ("general.architecture", "general.name",
                                                        "general.file_type", "general.size_label")) -> dict:
    """Scalar metadata values of a GGUF file (only ``keys``); {} if the file is not GGUF v2/v3."""
    out: dict = {}
    try:
        with open(path, "rb") as f:
            def read(fmt: str):
                data = f.read(struct.calcsize(fmt))
                return struct.unpack(fmt, data)[0]

            def read_str() -> bytes:
                return f.read(read("<Q"))

            def skip(vtype: int) -> None:
                if vtype == 8:
                    f.seek(read("<Q"), os.SEEK_CUR)
                elif vtype == 9:
                    itype, count = read("<I"), read("<Q")
                    if itype in _GGUF_SCALAR:
                        f.seek(struct.calcsize("<" + _GGUF_SCALAR[itype]) * count, os.SEEK_CUR)
                    else:
                        for _ in range(count):
                            skip(itype)
                else:
                    f.seek(struct.calcsize("<" + _GGUF_SCALAR[vtype]), os.SEEK_CUR)

            if f.read(4) != b"GGUF" or read("<I") not in (2, 3):
                return {}
            read("<Q")  # tensor count
            for _ in range(read("<Q")):
                key = read_str().decode("utf-8", "replace")
                vtype = read("<I")
                if key in keys and vtype == 8:
                    out[key] = read_str().decode("utf-8", "replace")
                elif key in keys and vtype in _GGUF_SCALAR:
                    out[key] = read("<" + _GGUF_SCALAR[vtype])
                else:
                    skip(vtype)
                if len(out) == len(keys):
                    break
    except (OSError, struct.error, KeyError):
        pass
    return out
