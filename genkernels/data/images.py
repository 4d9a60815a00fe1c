"""Any folder of images a user names, read with Pillow.

Images are found recursively and sorted by path; every 20th goes to val and to test (split="all"
keeps them all). With `size` given every image is resized to it (bilinear); without it all images
must already share the first image's size. Files are checked when the dataset is built (a file
Pillow cannot identify raises at once) and decoded when an item is read.

Values are scaled by the file's bit depth: 8-bit images by 255, 16-bit greyscale (Pillow modes
"I;16*", and "I" holding values up to 65535) by 65535, so a 16-bit 32768 reads as 0.5, not 1.0.
Pillow itself reduces 16-bit RGB(A) PNGs to 8 bits per channel.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels.data._splits import check_split, FILE_SPLITS, split_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Pillow modes of 16-bit greyscale images ("I" is how older Pillows open 16-bit PNGs, and a 32-bit
# integer mode in general: values above 65535 are refused rather than guessed at)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535.0


def image_files(path: str | os.PathLike) -> list[Path]:
    """Image files under a folder (recursively, sorted), or the single image file named."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"image source {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"image folder {str(path)!r} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image file {str(path)!r}: {error}") from None
    return height, width


class ImageFolderDataset(Dataset):
    """Images as float32 tensors (channels, H, W) in [0, 1].

    path      a folder (searched recursively) or one image file
    size      (H, W) to resize every image to; None: all images must share one size
    channels  1 (greyscale, Pillow mode "L") or 3 (RGB)
    split     "train", "val", "test" or "all"
    """

    kind = "image"

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None, channels: int = 3,
                 split: str = "all"):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if size is not None and (len(tuple(size)) != 2 or any(int(s) <= 0 for s in size)):
            raise ValueError(f"size must be (H, W) with positive sides or None, got {size!r}")
        check_split(split, FILE_SPLITS)
        self.path, self.split, self.channels = Path(path), split, channels
        files = image_files(path)
        sizes = [_image_size(p) for p in files]  # opens every header: bad files fail here
        if size is None:
            for file, file_size in zip(files, sizes):
                if file_size != sizes[0]:
                    raise ValueError(
                        f"image {str(file)!r} is {file_size[0]}x{file_size[1]} (HxW) but {str(files[0])!r} "
                        f"is {sizes[0][0]}x{sizes[0][1]}; pass size=(H, W) to resize all images"
                    )
            size = sizes[0]
        self.size = (int(size[0]), int(size[1]))
        self.shape = (channels, *self.size)
        self.files = [files[i] for i in split_indices(len(files), split)]
        if not self.files:
            raise ValueError(f"split {split!r} of image folder {str(path)!r} is empty: {len(files)} images "
                             "in all (every 20th goes to val and to test); use split='all'")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as image:
                if image.mode in _SIXTEEN_BIT_MODES:
                    pixels = self._sixteen_bit_pixels(image, path)
                else:
                    image = image.convert("L" if self.channels == 1 else "RGB")
                    pixels = np.asarray(self._resized(image), dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"cannot decode image file {str(path)!r}: {error}") from None
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(pixels))  # (channels, H, W)

    def _resized(self, image):
        from PIL import Image

        if image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
        return image

    def _sixteen_bit_pixels(self, image, path: Path) -> np.ndarray:
        """A 16-bit greyscale image as (H, W) or (H, W, 3) float32 in [0, 1] (divided by 65535)."""
        from PIL import Image

        values = np.asarray(image.convert("I"), dtype=np.int64)  # exact for every 16-bit value
        if values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX):
            raise ValueError(f"image file {str(path)!r} (mode {image.mode!r}) holds values in "
                             f"[{values.min()}, {values.max()}], outside the 16-bit range [0, 65535]")
        # mode "F" (float32, exact below 2**24) resizes bilinearly without rounding to 8 bits
        pixels = np.asarray(self._resized(Image.fromarray(values.astype(np.float32), mode="F")),
                            dtype=np.float32) / _SIXTEEN_BIT_MAX
        return pixels if self.channels == 1 else np.repeat(pixels[:, :, None], 3, axis=2)

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({str(self.path)!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.shape})")
