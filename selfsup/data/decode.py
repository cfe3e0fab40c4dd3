"""Decoding image files: one file, or a list of them in a thread pool, to uint8 arrays of one side.

Shared by the in-memory image folder (``selfsup.data.folder``), the streamed one
(``selfsup.data.stream``), user-labelled images (``selfsup.data.labelled``), ``selfsup embed``
and ``selfsup classify``: every path decodes pixel for pixel the same way. Unreadable files
(corrupt, truncated, empty, permission denied) decode to None; :func:`warn_skipped` counts them
in one warning and :func:`stack_images` stacks the rest to ``[N, C, H, W]``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from selfsup.data.dataset import counted

_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# 16- and 32-bit single-channel modes: Pillow's convert("L") clips them at 255 (a 16-bit PNG turns white),
# so they are scaled instead: integers as 16-bit (0..65535 -> 0..255), floats as [0, 1].
_DEEP_GRAY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
DECODE_WORKERS = 4
PROGRESS_THRESHOLD = 2000
_DENIED: set = set()  # files decode_image could not open for lack of permission (str paths)


def _to_l_or_rgb(img: Any) -> Any:
    """A decoded PIL image as mode ``L`` (gray modes) or ``RGB`` (all others: palette, CMYK, ...).

    Transparency is composited onto black, since the colour under a transparent pixel is
    arbitrary; 16-bit gray is scaled to 8 bits (see ``_DEEP_GRAY_MODES``).
    """
    from PIL import Image

    if img.mode in _DEEP_GRAY_MODES:
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if img.mode == "F" else a / 257.0
        return Image.fromarray(np.rint(np.nan_to_num(a)).clip(0, 255).astype(np.uint8), "L")
    target = "L" if img.mode in _GRAY_MODES else "RGB"
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        img = img.convert(target + "A")
        out = Image.new(target, img.size, 0)
        out.paste(img.convert(target), mask=img.getchannel("A"))
        return out
    return img.convert(target)


def decode_image(path: Path, size: int) -> Optional[np.ndarray]:
    """Decode one image to uint8 ``[size, size]`` (gray) or ``[size, size, 3]``; None if unreadable.

    Shorter side resized to ``size`` (bilinear, antialiased; smaller images are scaled up),
    then centre-cropped. Truncated files are unreadable, not padded.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = _to_l_or_rgb(img)
            w, h = img.size
            if min(w, h) != size:
                scale = size / min(w, h)
                new = (max(size, round(w * scale)), max(size, round(h * scale)))
                img = img.resize(new, Image.Resampling.BILINEAR)
                w, h = new
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except PermissionError:  # said apart from damage: the fix differs
        _DENIED.add(str(path))
        return None
    except Exception:  # corrupt, truncated, zero bytes, not an image, decompression bomb
        return None


def decode_all(files: list[Path], size: int) -> list[Optional[np.ndarray]]:
    """Decode ``files`` in a thread pool, with a tqdm bar for large folders."""
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        results: Iterable[Optional[np.ndarray]] = pool.map(lambda p: decode_image(p, size), files, chunksize=16)
        if len(files) > PROGRESS_THRESHOLD:
            try:
                from tqdm import tqdm

                results = tqdm(results, total=len(files), desc="decoding images", unit="img")
            except ImportError:
                pass
        return list(results)


def warn_skipped(skipped: list[Path]) -> None:
    """One warning naming how many files were unreadable and the first few."""
    if not skipped:
        return
    denied = [p for p in skipped if str(p) in _DENIED]
    broken = [p for p in skipped if str(p) not in _DENIED]
    for paths, why in (
        (denied, "permission denied: make them readable (chmod +r) or move them out"),
        (broken, "corrupt, truncated or empty; delete or re-export them to silence this"),
    ):
        if paths:
            shown = ", ".join(str(p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
            warnings.warn(
                f"imagefolder: skipped {counted(len(paths), 'unreadable file')}: {shown} ({why})", stacklevel=4
            )


def stack_images(arrays: list[np.ndarray]) -> torch.Tensor:
    """Stack decoded images to ``[N, C, H, W]``; gray joins RGB by channel replication."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()
