"""Compressed bodies inflated, never past a limit: gzip, zstd and snappy.

Each function returns what it could decompress, at most `limit` bytes, and a
problem in words when it stopped short (the limit, a cut or corrupt stream); it
raises nothing on hostile input. A bomb of 100 KB that would inflate to 100 GB
costs `limit` bytes of memory and the time to inflate them. Pure: no Django.
"""

from __future__ import annotations

import struct
import zlib

import cramjam
import crc32c
import zstandard

GZIP, ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
SNAPPY_FRAMED = b"\xff\x06\x00\x00sNaPpY"
SNAPPY_XERIAL = b"\x82SNAPPY\x00"
ZSTD_WINDOW = 1 << 25  # a zstd frame may ask for this much memory to decode, no more


def over(limit: int) -> str:
    """The problem of a body that inflates past the limit."""
    return f"stopped after {amount(limit)} decompressed: the rest is not shown"


def gunzip(body: bytes, limit: int) -> tuple[bytes, str]:
    """gzip, one member or several in a row (as `cat a.gz b.gz` makes)."""
    out = bytearray()
    rest = body
    while rest:
        stream = zlib.decompressobj(wbits=31)
        try:
            # Never more than one byte past the limit: max_length holds the output.
            out += stream.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            return bytes(out), f"not valid gzip: {exc}"
        if len(out) > limit:
            return bytes(out[:limit]), over(limit)
        if not stream.eof:
            return bytes(out), "the gzip stream ends early: the body is cut short or corrupt"
        rest = stream.unused_data
        if rest and not rest.startswith(GZIP):
            return bytes(out), f"{len(rest):,} bytes after the gzip stream are not shown"
    return bytes(out), ""


def unzstd(body: bytes, limit: int) -> tuple[bytes, str]:
    """zstd, one frame or several; a frame asking for a window over ZSTD_WINDOW is refused."""
    out = bytearray()
    context = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW)
    try:
        with context.stream_reader(body, read_across_frames=True) as reader:
            while len(out) <= limit:
                chunk = reader.read(min(1 << 20, limit + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError as exc:
        return bytes(out), f"not valid zstd: {exc}"
    if len(out) > limit:
        return bytes(out[:limit]), over(limit)
    # The reader says nothing of a frame cut short; a decompressobj does, and now that
    # the whole output is known to fit the limit, running one over the input is safe.
    rest = body
    while rest:
        frame = context.decompressobj()
        try:
            frame.decompress(rest)
        except zstandard.ZstdError as exc:
            return bytes(out), f"not valid zstd: {exc}"
        if not frame.eof:
            return bytes(out), "the zstd stream ends early: the body is cut short or corrupt"
        rest = frame.unused_data
    return bytes(out), ""


def unsnappy_framed(body: bytes, limit: int) -> tuple[bytes, str]:
    """The snappy framing format: chunks of a type, a length and (for data) a masked CRC."""
    out = bytearray()
    at = len(SNAPPY_FRAMED)
    while at < len(body):
        if at + 4 > len(body):
            return bytes(out), "the snappy stream ends early: the body is cut short or corrupt"
        kind = body[at]
        length = int.from_bytes(body[at + 1 : at + 4], "little")
        chunk = body[at + 4 : at + 4 + length]
        at += 4 + length
        if len(chunk) < length:
            return bytes(out), "the snappy stream ends early: the body is cut short or corrupt"
        if kind in (0x00, 0x01):
            if length < 4:
                return bytes(out), "a snappy chunk is too short to hold its checksum"
            try:
                data = chunk[4:] if kind else snappy_block(chunk[4:], 65536)
            except ValueError as exc:
                return bytes(out), str(exc)
            if struct.unpack("<I", chunk[:4])[0] != masked_crc(data):
                return bytes(out), "a snappy chunk fails its checksum: the body is corrupt"
            out += data
            if len(out) > limit:
                return bytes(out[:limit]), over(limit)
        elif kind < 0x80:  # reserved and unskippable; 0x80 to 0xff may be skipped
            return bytes(out), f"snappy chunk type {kind:#04x} is not known"
    return bytes(out), ""


def masked_crc(data: bytes) -> int:
    """The CRC-32C the snappy framing format stores, masked as its spec says."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def unsnappy_xerial(body: bytes, limit: int) -> tuple[bytes, str]:
    """Java's snappy-java framing: a 16-byte header, then blocks of a 4-byte length and data."""
    out = bytearray()
    at = 16
    while at < len(body):
        length = int.from_bytes(body[at : at + 4], "big")
        block = body[at + 4 : at + 4 + length]
        at += 4 + length
        if len(block) < length or length == 0:
            return bytes(out), "the snappy stream ends early: the body is cut short or corrupt"
        try:
            out += snappy_block(block, limit + 1 - len(out))
        except ValueError as exc:
            return bytes(out), str(exc)
        if len(out) > limit:
            return bytes(out[:limit]), over(limit)
    return bytes(out), ""


def snappy_block(block: bytes, most: int) -> bytes:
    """One raw snappy block; ValueError if corrupt or if it says it holds more than `most`."""
    try:
        declared = cramjam.snappy.decompress_raw_len(block)
    except cramjam.DecompressionError:
        raise ValueError("not valid snappy: the length is unreadable") from None
    if declared > most:
        raise ValueError(f"a snappy block says it holds {amount(declared)}, over the limit")
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise ValueError(f"not valid snappy: {exc}") from None


def amount(n: int) -> str:
    """Bytes as a person reads them: "16 MiB", "70,000 bytes"."""
    return (
        f"{n // (1024 * 1024)} MiB"
        if n >= 1024 * 1024 and not n % (1024 * 1024)
        else f"{n:,} bytes"
    )
