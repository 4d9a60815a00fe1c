"""Lossy image compression with a VQ-VAE: code maps entropy-coded by the PixelCNN prior.

    image -> VQ-VAE encoder -> code map k (h, w) -> arithmetic coder with p(k_i | k_<i) -> bytes
    bytes -> arithmetic decoder (the prior run on the codes decoded so far) -> k -> decoder -> image

The arithmetic coder is the classic integer coder of Witten, Neal & Cleary (1987) with a 32-bit state
(low, high) and pending bits. Each symbol's probability table p (K entries) is quantised to integer
frequencies f_j = floor(p_j (T - K)) + 1 (T = 2^precision, 16 by default), so every symbol stays
codable and f_j / sum f >= p_j (T - K) / T. Code length bound, for n symbols with tables p_i:

    bits <= sum_i -log2 p_i(s_i) + n (log2(T / (T - K)) + 1e-4) + 9

(the quantisation term; the integer interval arithmetic loses < 2^-13 bits per symbol with a range
kept above 2^30 and T <= 2^16; 2 bits end the stream and <= 7 pad the last byte). For K = 64 and
T = 2^16 the per-symbol term is 0.0015 bits.

Files (`compress_images`): b"GKVQ", version, image count N, chunk size B, code map h, w and K, then one
arithmetic-coded stream. The images are coded in chunks of B; inside a chunk the stream is ordered
position by position (raster order of the code map), then image by image, so the decoder runs the
prior once per position on the whole chunk. The encoder computes its probabilities exactly as the
decoder will (the prior run on the same chunk with the not-yet-decoded positions set to code 0), so
the tables match bit for bit: decoding needs the same model and the same CPU/GPU arithmetic
(decode on the kind of machine that encoded; float kernels may differ between machines).

`compression_report` puts the VQ-VAE's bits per image and PSNR beside PNG (lossless) and JPEG at the
smallest quality whose PSNR reaches the VQ-VAE's (Pillow), per image file and with all images tiled
into one file (headers amortised).
"""
from __future__ import annotations

import io
import math
import struct
from typing import Sequence

import numpy as np
import torch

STATE_BITS = 32
_TOP = (1 << STATE_BITS) - 1
_HALF = 1 << (STATE_BITS - 1)
_QUARTER = 1 << (STATE_BITS - 2)
MAGIC = b"GKVQ"
VERSION = 1


# ---- frequency tables ----------------------------------------------------------------------------
def quantize_probabilities(probs, precision: int = 16) -> np.ndarray:
    """Cumulative integer frequencies (M, K + 1) int64 for probability tables (M, K) (or (K,)).

    f_j = floor(p_j (T - K)) + 1 with T = 2^precision after normalising each row to sum 1; row m's
    symbol j gets [cum[m, j], cum[m, j + 1]) of cum[m, K] <= T. Raises ValueError for negative,
    non-finite or all-zero rows and for K >= T / 2."""
    if isinstance(precision, bool) or not isinstance(precision, int) or not 8 <= precision <= 24:
        raise ValueError(f"precision must be an int in [8, 24], got {precision!r}")
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must have shape (M, K) or (K,), got {p.shape}")
    total = 1 << precision
    k = p.shape[1]
    if 2 * k > total:
        raise ValueError(f"probs has K = {k} symbols; precision {precision} allows fewer than {total // 2}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    sums = p.sum(1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("every row of probs must have a positive sum")
    freq = np.floor(p / sums * (total - k)).astype(np.int64) + 1
    cum = np.zeros((p.shape[0], k + 1), dtype=np.int64)
    np.cumsum(freq, axis=1, out=cum[:, 1:])
    return cum


def code_length_bound(probs, symbols, precision: int = 16) -> float:
    """The bound of the module docstring in bits: ideal length -sum log2 p + n (log2(T/(T-K)) +
    1e-4) + 9."""
    p = np.asarray(probs.detach().cpu().double() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)
    s = np.asarray(symbols, dtype=np.int64)
    ideal = -np.log2(p[np.arange(len(s)), s]).sum()
    t, k = 1 << precision, p.shape[1]
    return float(ideal + len(s) * (math.log2(t / (t - k)) + 1e-4) + 9)


# ---- the coder -----------------------------------------------------------------------------------
class ArithmeticEncoder:
    """Integer arithmetic encoder (32-bit low/high, pending bits). `encode(cum, symbol)` with a
    cumulative frequency row (K + 1,), then `finish()` -> bytes."""

    def __init__(self):
        self.low, self.high, self.pending = 0, _TOP, 0
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        if self.pending:
            self.bits.extend([1 - bit] * self.pending)
            self.pending = 0

    def encode(self, cum: Sequence[int], symbol: int) -> None:
        if not 0 <= symbol < len(cum) - 1 or int(cum[symbol + 1]) <= int(cum[symbol]):
            raise ValueError(f"symbol {symbol} has no probability in a table of {len(cum) - 1} symbols")
        total = int(cum[-1])
        lo, hi = int(cum[symbol]), int(cum[symbol + 1])
        span = self.high - self.low + 1
        self.high = self.low + span * hi // total - 1
        self.low = self.low + span * lo // total
        while True:
            if self.high < _HALF:
                self._emit(0)
            elif self.low >= _HALF:
                self._emit(1)
                self.low -= _HALF
                self.high -= _HALF
            elif self.low >= _QUARTER and self.high < 3 * _QUARTER:
                self.pending += 1
                self.low -= _QUARTER
                self.high -= _QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1

    def finish(self) -> bytes:
        self.pending += 1
        self._emit(0 if self.low < _QUARTER else 1)
        return np.packbits(np.asarray(self.bits, dtype=np.uint8)).tobytes()


class ArithmeticDecoder:
    """The inverse of ArithmeticEncoder: `decode(cum)` returns the next symbol given the same
    cumulative frequency row the encoder used for it."""

    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
        self.position = 0
        self.low, self.high, self.value = 0, _TOP, 0
        for _ in range(STATE_BITS):
            self.value = 2 * self.value + self._bit()

    def _bit(self) -> int:
        bit = int(self.bits[self.position]) if self.position < len(self.bits) else 0
        self.position += 1
        return bit

    def decode(self, cum) -> int:
        cum = np.asarray(cum)
        total = int(cum[-1])
        span = self.high - self.low + 1
        count = ((self.value - self.low + 1) * total - 1) // span
        symbol = int(np.searchsorted(cum, count, side="right")) - 1
        lo, hi = int(cum[symbol]), int(cum[symbol + 1])
        self.high = self.low + span * hi // total - 1
        self.low = self.low + span * lo // total
        while True:
            if self.high < _HALF:
                pass
            elif self.low >= _HALF:
                self.low -= _HALF
                self.high -= _HALF
                self.value -= _HALF
            elif self.low >= _QUARTER and self.high < 3 * _QUARTER:
                self.low -= _QUARTER
                self.high -= _QUARTER
                self.value -= _QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
            self.value = 2 * self.value + self._bit()
        return symbol


def encode(symbols, probs, precision: int = 16) -> bytes:
    """Arithmetic-code symbols (n,) ints, symbol i with probability table probs[i] ((n, K) array or
    tensor). Decode with `decode(data, probs, precision)`."""
    s = np.asarray(symbols.cpu() if isinstance(symbols, torch.Tensor) else symbols, dtype=np.int64).ravel()
    cum = quantize_probabilities(probs, precision)
    if cum.shape[0] != s.shape[0]:
        raise ValueError(f"probs has {cum.shape[0]} tables for {s.shape[0]} symbols")
    k = cum.shape[1] - 1
    if s.size and (s.min() < 0 or s.max() >= k):
        raise ValueError(f"symbols must be in [0, {k}), got values in [{s.min()}, {s.max()}]")
    encoder = ArithmeticEncoder()
    for i, symbol in enumerate(s.tolist()):
        encoder.encode(cum[i], symbol)
    return encoder.finish()


def decode(data: bytes, probs, precision: int = 16, count: int | None = None) -> np.ndarray:
    """Symbols (n,) int64 of `data`. probs: (n, K) tables (as given to `encode`), or a callable
    probs(i, decoded_so_far) -> (K,) table for adaptive / autoregressive models (then pass count)."""
    decoder = ArithmeticDecoder(data)
    if callable(probs):
        if count is None:
            raise ValueError("count (the number of symbols) is required when probs is a callable")
        out: list[int] = []
        for i in range(count):
            out.append(decoder.decode(quantize_probabilities(probs(i, out), precision)[0]))
        return np.asarray(out, dtype=np.int64)
    cum = quantize_probabilities(probs, precision)
    return np.asarray([decoder.decode(row) for row in cum], dtype=np.int64)


# ---- VQ-VAE code maps ----------------------------------------------------------------------------
def _position_probs(model, codes: torch.Tensor, position: int) -> np.ndarray:
    """Prior probabilities (B, K) float64 at raster `position` given codes (B, h, w), whose entries
    at and after `position` are ignored (set to 0, as the decoder has them)."""
    h, w = codes.shape[1:]
    known = (torch.arange(h * w, device=codes.device) < position).view(1, h, w)
    logits = model.prior_logits(torch.where(known, codes, torch.zeros_like(codes)))  # (B, K, h, w)
    return logits[:, :, position // w, position % w].double().softmax(1).cpu().numpy()


@torch.no_grad()
def compress_codes(model, codes: torch.Tensor, *, chunk: int = 256, precision: int = 16) -> bytes:
    """Code maps (N, h, w) -> bytes, coded with `model`'s prior (see the module docstring)."""
    h, w = model.config.code_shape
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3 or tuple(codes.shape[1:]) != (h, w):
        raise ValueError(f"codes must be a tensor (N, {h}, {w}), got "
                         f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    was_training = model.training
    model.eval()
    codes = codes.long().to(model.device)
    encoder = ArithmeticEncoder()
    try:
        for start in range(0, codes.shape[0], chunk):
            block = codes[start: start + chunk]
            symbols = block.flatten(1).cpu().numpy()  # (B, h w)
            for position in range(h * w):
                cum = quantize_probabilities(_position_probs(model, block, position), precision)
                for b in range(block.shape[0]):
                    encoder.encode(cum[b], int(symbols[b, position]))
    finally:
        model.train(was_training)
    header = MAGIC + struct.pack("<BIIHHHB", VERSION, codes.shape[0], chunk, h, w, model.config.num_codes, precision)
    return header + encoder.finish()


_HEADER = struct.calcsize("<BIIHHHB")


@torch.no_grad()
def decompress_codes(model, data: bytes) -> torch.Tensor:
    """bytes from `compress_codes` -> code maps (N, h, w) int64 on the model's device."""
    if not isinstance(data, (bytes, bytearray)) or data[:4] != MAGIC or len(data) < 4 + _HEADER:
        raise ValueError("data is not a genkernels VQ-VAE file (no GKVQ header)")
    version, n, chunk, h, w, k, precision = struct.unpack("<BIIHHHB", data[4: 4 + _HEADER])
    if version != VERSION:
        raise ValueError(f"unsupported file version {version} (this code reads {VERSION})")
    if (h, w) != tuple(model.config.code_shape) or k != model.config.num_codes:
        raise ValueError(f"the file holds {h}x{w} code maps over {k} codes, but the model has "
                         f"{model.config.code_shape} over {model.config.num_codes}")
    was_training = model.training
    model.eval()
    decoder = ArithmeticDecoder(bytes(data[4 + _HEADER:]))
    codes = torch.zeros(n, h, w, dtype=torch.long, device=model.device)
    try:
        for start in range(0, n, chunk):
            block = codes[start: start + chunk]  # a view: filled in place
            for position in range(h * w):
                cum = quantize_probabilities(_position_probs(model, block, position), precision)
                column = [decoder.decode(cum[b]) for b in range(block.shape[0])]
                block[:, position // w, position % w] = torch.as_tensor(column, device=codes.device)
    finally:
        model.train(was_training)
    return codes


@torch.no_grad()
def compress_images(model, images: torch.Tensor, *, chunk: int = 256, precision: int = 16) -> bytes:
    """Images (N, C, H, W) (floats in [0, 1] or integer levels) -> bytes: their VQ-VAE code maps,
    arithmetic-coded with the prior."""
    was_training = model.training
    model.eval()
    try:
        codes = torch.cat([model.encode(images[i: i + chunk].to(model.device)) for i in range(0, len(images), chunk)])
    finally:
        model.train(was_training)
    return compress_codes(model, codes, chunk=chunk, precision=precision)


@torch.no_grad()
def decompress(model, data: bytes) -> torch.Tensor:
    """bytes from `compress_images` -> decoded images (N, C, H, W) float32 in [0, 1]."""
    codes = decompress_codes(model, data)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.decode_codes(codes[i: i + 256]) for i in range(0, len(codes), 256)])
    finally:
        model.train(was_training)


# ---- baselines and the report --------------------------------------------------------------------
def _to_pil(image: torch.Tensor):
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if array.shape[0] == 1:
        return Image.fromarray(array[0].numpy(), mode="L")
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def _from_pil(picture, channels: int) -> torch.Tensor:
    array = torch.from_numpy(np.asarray(picture.convert("L" if channels == 1 else "RGB")).copy()).float() / 255
    return array.unsqueeze(0) if channels == 1 else array.permute(2, 0, 1)


def _tile(images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All images in one (C, rows H, cols W) image (blank tiles at the end); returns it and cols."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = torch.zeros(rows * cols, c, h, w)
    canvas[:n] = images.cpu()
    return canvas.view(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w), cols


def _untile(canvas: torch.Tensor, n: int, shape) -> torch.Tensor:
    c, h, w = shape
    rows, cols = canvas.shape[1] // h, canvas.shape[2] // w
    return canvas.view(c, rows, h, cols, w).permute(1, 3, 0, 2, 4).reshape(rows * cols, c, h, w)[:n]


def _save(picture, fmt: str, quality: int | None = None) -> bytes:
    buffer = io.BytesIO()
    if fmt == "PNG":
        picture.save(buffer, format="PNG", optimize=True)
    else:
        picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _roundtrip(images: torch.Tensor, fmt: str, quality: int | None, tiled: bool) -> tuple[float, torch.Tensor]:
    """(bits per image, decoded images) of images stored as PNG/JPEG files, one per image or tiled."""
    from PIL import Image

    n, c = images.shape[:2]
    if tiled:
        canvas, _ = _tile(images)
        data = _save(_to_pil(canvas), fmt, quality)
        decoded = _untile(_from_pil(Image.open(io.BytesIO(data)), c), n, images.shape[1:])
        return 8 * len(data) / n, decoded
    sizes, decoded = [], []
    for image in images:
        data = _save(_to_pil(image), fmt, quality)
        sizes.append(len(data))
        decoded.append(_from_pil(Image.open(io.BytesIO(data)), c))
    return 8 * sum(sizes) / n, torch.stack(decoded)


def _jpeg_matched(images: torch.Tensor, target_psnr: float, tiled: bool) -> dict[str, float]:
    """JPEG at the smallest quality (1..95) whose mean PSNR reaches target_psnr (95 if none does)."""
    from genkernels.metrics.image_quality import psnr

    low, high = 1, 95
    while low < high:  # PSNR grows with quality (monotone enough for a bisection)
        middle = (low + high) // 2
        _, decoded = _roundtrip(images, "JPEG", middle, tiled)
        if psnr(decoded, images) >= target_psnr:
            high = middle
        else:
            low = middle + 1
    bits, decoded = _roundtrip(images, "JPEG", low, tiled)
    return {"quality": low, "bits_per_image": bits, "psnr_db": psnr(decoded, images)}


@torch.no_grad()
def compression_report(model, dataset, *, max_items: int | None = None, chunk: int = 256) -> dict:
    """Compress the held-out images of `dataset` with the VQ-VAE and its prior and compare.

    Returns {"images", "pixels_per_image",
             "vqvae": {"bits_per_image" (file, header included), "payload_bits_per_image",
                       "prior_nll_bits_per_image" (the prior's -log2 p of the code maps, float32),
                       "psnr_db" (decoded images rounded to 8 bits), "lossless_codes" (round trip)},
             "png": {"bits_per_image", "tiled_bits_per_image"} (lossless 8-bit),
             "jpeg": {"per_file": {"quality", "bits_per_image", "psnr_db"}, "tiled": {...}}}
    where "tiled" stores all images in one file (headers amortised) and JPEG's quality is the
    smallest whose PSNR reaches the VQ-VAE's."""
    from genkernels.metrics.image_quality import psnr

    count = len(dataset) if max_items is None else min(len(dataset), int(max_items))
    if count < 1:
        raise ValueError("the dataset is empty")
    items = [dataset[i] for i in range(count)]
    raw = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
    images = model.images(raw.to(model.device)).cpu()
    data = compress_images(model, images, chunk=chunk)
    codes = decompress_codes(model, data)
    expected = torch.cat([model.encode(images[i: i + chunk].to(model.device)) for i in range(0, count, chunk)])
    decoded = torch.cat([model.decode_codes(codes[i: i + chunk]) for i in range(0, count, chunk)]).cpu()
    decoded = (decoded * 255).round() / 255  # what an 8-bit output file holds
    vq_psnr = psnr(decoded, images)
    was_training = model.training
    model.eval()
    nll = torch.cat([model.prior_nll(expected[i: i + chunk]) for i in range(0, count, chunk)])
    model.train(was_training)
    png_bits, _ = _roundtrip(images, "PNG", None, tiled=False)
    png_tiled, _ = _roundtrip(images, "PNG", None, tiled=True)
    return {
        "images": count,
        "pixels_per_image": math.prod(images.shape[1:]),
        "vqvae": {"bits_per_image": 8 * len(data) / count,
                  "payload_bits_per_image": 8 * (len(data) - 4 - _HEADER) / count,
                  "prior_nll_bits_per_image": float(nll.double().mean() / math.log(2)),
                  "psnr_db": vq_psnr,
                  "lossless_codes": bool(torch.equal(codes.cpu(), expected.cpu()))},
        "png": {"bits_per_image": png_bits, "tiled_bits_per_image": png_tiled},
        "jpeg": {"per_file": _jpeg_matched(images, vq_psnr, tiled=False),
                 "tiled": _jpeg_matched(images, vq_psnr, tiled=True)},
    }


__all__ = ["ArithmeticDecoder", "ArithmeticEncoder", "code_length_bound", "compress_codes", "compress_images",
           "compression_report", "decode", "decompress", "decompress_codes", "encode", "quantize_probabilities"]
