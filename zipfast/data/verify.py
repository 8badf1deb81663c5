"""Fail before training: open, verify and decode every image of a dataset up front.

A corrupt test image would otherwise surface only at the final evaluation, after the whole
budget was spent. Decoding runs in a thread pool (PIL releases the GIL while decoding).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from PIL import Image
from tqdm.auto import tqdm

from zipfast.data.imagefolder import DatasetError

_SHOW = 5  # failures listed in the error message


def check_image(path: str) -> str | None:
    """None if `path` opens, verifies and fully decodes; else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums (PNG CRCs); leaves the image unusable
        with Image.open(path) as im:
            im.load()  # decode every pixel: a truncated JPEG passes verify() but fails here
        return None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError…
        return f"{type(e).__name__}: {e}"


def verify_images(paths: Sequence[str] | Iterable[str], workers: int | None = None, progress: bool = True,
                  desc: str = "checking images") -> None:
    """Check every image; DatasetError lists the unreadable ones (all of them counted)."""
    paths = list(dict.fromkeys(paths))
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    bad = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc=desc, unit="image", disable=not progress, dynamic_ncols=True) as bar:
        for path, reason in zip(paths, pool.map(check_image, paths)):
            bar.update(1)
            if reason is not None:
                bad.append((path, reason))
    if bad:
        listed = "; ".join(f"'{p}' ({r})" for p, r in bad[:_SHOW])
        more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise DatasetError(f"cannot read image file(s) {listed}{more}: {len(bad)} of {len(paths)} images fail to "
                           "decode. Replace or delete them (or convert them to PNG/JPEG), then run again.")
