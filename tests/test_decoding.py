"""Bodies recognised and decoded (brokers/decode.py), hostile ones included: no broker, no database."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from typing import Any

import cbor2
import cramjam
import msgpack
import pytest
import zstandard

from brokers import decode, decompress
from brokers.decode import Decoded
from brokers.decode import decode as decoded
from brokers.schemas import SchemaError, compile_schema
from tests.schema_samples import (
    ORDER_AVSC,
    avro_bytes,
    avsc,
    confluent,
    order_descriptor_set,
    protobuf_order,
)

ORDER = {"id": 7, "item": "pen", "tags": ["a", "b"]}


def recognised(body: bytes, *args: Any, **kwargs: Any) -> Decoded:
    """What decode() makes of a body it must recognise."""
    found = decoded(body, *args, **kwargs)
    assert found is not None, body[:80]
    return found


def avro_schema(**where: str):
    return compile_schema("orders-value", "avro", avsc(), **(where or {"destination": "orders*"}))


def protobuf_schema(**where: str):
    where = where or {"destination": "orders*"}
    return compile_schema("shop-order", "protobuf", order_descriptor_set(), "shop.Order", **where)


# -- what is recognised, and how it is named ----------------------------------


def test_plain_text_and_json_are_left_to_the_page_as_they_are():
    assert decoded(b"") is None
    assert decoded(b"hello, world\n") is None
    assert decoded(json.dumps(ORDER).encode()) is None
    assert decoded("grüße, 東京".encode()) is None


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(json.dumps(ORDER).encode()), "gzip → JSON"),
        (zstandard.ZstdCompressor().compress(json.dumps(ORDER).encode()), "zstd → JSON"),
        (bytes(cramjam.snappy.compress(json.dumps(ORDER).encode())), "snappy → JSON"),
        (bytes(cramjam.snappy.compress_raw(json.dumps(ORDER).encode())), "snappy → JSON"),
        (msgpack.packb(ORDER), "MessagePack"),
        (cbor2.dumps(ORDER), "CBOR"),
        (gzip.compress(msgpack.packb(ORDER)), "gzip → MessagePack"),
        (gzip.compress(gzip.compress(cbor2.dumps(ORDER))), "gzip → gzip → CBOR"),
    ],
)
def test_compressed_and_binary_bodies_decode_to_their_structure(body, encoding):
    found = recognised(body)
    assert found is not None
    assert (found.encoding, found.form, found.value, found.problem) == (
        encoding,
        "structure",
        ORDER,
        "",
    )
    assert json.loads(found.pretty()) == ORDER


def test_java_snappy_framing_is_read_block_by_block():
    text = b"one line of a log\n" * 100
    block = bytes(cramjam.snappy.compress_raw(text))
    body = b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" * 2 + len(block).to_bytes(4, "big") + block
    found = recognised(body)
    assert (found.encoding, found.form, found.value) == (
        "snappy (xerial) → text",
        "text",
        text.decode(),
    )


def test_compressed_text_and_compressed_unknown_bytes_are_named_as_such():
    text = recognised(gzip.compress("plain words, ünïcode".encode()))
    assert (text.encoding, text.form, text.value) == ("gzip → text", "text", "plain words, ünïcode")
    image = recognised(gzip.compress(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    assert (image.encoding, image.form, image.value[:4]) == ("gzip", "bytes", b"\x89PNG")


def test_binary_values_in_a_structure_become_json_text():
    when = cbor2.dumps({"at": cbor2.CBORTag(1, 0), b"raw": b"\x00\xff", 3: [None, True]})
    found = recognised(when)
    assert found.value == {"at": "1970-01-01T00:00:00+00:00", "raw": "AP8=", "3": [None, True]}
    ext = recognised(msgpack.packb({"e": msgpack.ExtType(5, b"\x01\x02")}))
    assert ext.value == {"e": {"ext": 5, "data": "AQI="}}


def test_confluent_framing_is_named_with_its_schema_id_and_read_with_a_schema_that_fits():
    body = confluent(7, avro_bytes({"id": 42, "item": "pen", "note": None}))
    found = recognised(body, [avro_schema()], ["orders"])
    assert found.encoding == "Confluent wire format, schema id 7 → Avro (orders-value)"
    assert found.value == {"id": 42, "item": "pen", "note": None}


def test_confluent_framing_without_a_schema_that_fits_is_still_named():
    body = confluent(7, avro_bytes({"id": 42, "item": "pen", "note": None}))
    found = recognised(body, [avro_schema()], ["payments"])  # the pattern is orders*
    assert (found.encoding, found.form) == ("Confluent wire format, schema id 7", "bytes")
    assert found.value == body[5:]
    assert found.problem == "no uploaded schema matches its destination or headers"


def test_confluent_json_schema_payloads_are_json():
    found = recognised(confluent(12, json.dumps(ORDER).encode()))
    assert (found.encoding, found.value) == ("Confluent wire format, schema id 12 → JSON", ORDER)


def test_confluent_protobuf_skips_the_message_indexes():
    payload = protobuf_order(id=9, item="ink")
    schema = protobuf_schema()
    first = recognised(confluent(3, b"\x00" + payload), [schema], ["orders.eu"])
    assert first.encoding == "Confluent wire format, schema id 3 → Protobuf (shop-order)"
    assert first.value == {"id": "9", "item": "ink"}  # int64 as text, as Protobuf's JSON writes it
    # Two indexes, [0, 1] (zigzag: 0, 2): the upload's type is used whatever they say.
    nested = recognised(confluent(3, b"\x04\x00\x02" + payload), [schema], ["orders.eu"])
    assert nested.value == {"id": "9", "item": "ink"}


def test_avro_and_protobuf_bodies_without_framing_read_with_the_schema_that_fits():
    avro = recognised(
        avro_bytes({"id": 1, "item": "cup", "note": "gift"}), [avro_schema()], ["orders"]
    )
    assert (avro.encoding, avro.value) == (
        "Avro (orders-value)",
        {"id": 1, "item": "cup", "note": "gift"},
    )
    proto = recognised(protobuf_order(id=5, item="mug"), [protobuf_schema()], ["orders"])
    assert (proto.encoding, proto.value) == ("Protobuf (shop-order)", {"id": "5", "item": "mug"})


def test_text_and_json_where_a_schema_fits_stay_text():
    schema = avro_schema()
    assert decoded(json.dumps(ORDER).encode(), [schema], ["orders"]) is None
    assert decoded(b"an order came in at 10:42", [schema], ["orders"]) is None


def test_a_header_picks_the_schema_and_comes_before_a_pattern():
    by_header = compile_schema(
        "order-v2",
        "protobuf",
        order_descriptor_set(),
        "shop.Order",
        header="type",
        header_value="shop.Order",
    )
    body = protobuf_order(id=5, item="mug")
    assert decoded(body, [by_header], ["anything"], {"type": "other"}) is None
    found = recognised(
        body, [avro_schema(destination="*"), by_header], ["x"], [("type", b"shop.Order")]
    )
    assert found.encoding == "Protobuf (order-v2)"


def test_a_schema_with_a_pattern_and_a_header_needs_both():
    schema = avro_schema(destination="orders", header="content-type")
    body = avro_bytes({"id": 1, "item": "cup", "note": None})
    assert decoded(body, [schema], ["orders"], {}) is None
    assert decoded(body, [schema], ["payments"], {"content-type": "x"}) is None
    assert (
        recognised(body, [schema], ["orders"], {"content-type": "x"}).encoding
        == "Avro (orders-value)"
    )


# -- hostile bodies ------------------------------------------------------------


def test_a_gzip_bomb_stops_at_the_limit_without_an_exception():
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        found = recognised(bomb, limit=1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.encoding == "gzip"
    assert found.problem == "stopped after 1 MiB decompressed: the rest is not shown"
    assert len(found.value) == 1024 * 1024
    assert peak < 8 * 1024 * 1024  # a few copies of the limit, never the 64 MiB inside


def test_a_gzip_bomb_of_text_shows_its_first_part_as_text():
    found = recognised(gzip.compress(b"na " * 10_000_000), limit=100_000)
    assert (found.encoding, found.form, len(found.value)) == ("gzip → text", "text", 100_000)
    assert "stopped after 100,000 bytes" in found.problem


def test_zstd_and_snappy_bombs_stop_at_the_limit():
    zstd = recognised(
        zstandard.ZstdCompressor().compress(b"\x01" * (32 * 1024 * 1024)), limit=1 << 20
    )
    assert (zstd.encoding, len(zstd.value), zstd.problem) == (
        "zstd",
        1 << 20,
        "stopped after 1 MiB decompressed: the rest is not shown",
    )
    framed = recognised(bytes(cramjam.snappy.compress(b"\x01" * (8 * 1024 * 1024))), limit=1 << 20)
    assert (framed.encoding, len(framed.value)) == ("snappy", 1 << 20)
    # A raw block claiming more than the limit is not inflated at all.
    assert decompress.unsnappy_xerial(
        b"\x82SNAPPY\x00" + bytes(8) + b"\x00\x00\x00\x05" + b"\xff\xff\xff\xff\x0f", 1000
    ) == (b"", "a snappy block says it holds 4,294,967,295 bytes, over the limit")


def test_a_zstd_frame_asking_for_a_huge_window_is_refused():
    # 128 MiB of window, and no content size to bound it: the decoder would allocate it all.
    params = zstandard.ZstdCompressionParameters(window_log=27, write_content_size=False)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as w:
        w.write(b"x" * 100)
    found = recognised(out.getvalue())
    assert (found.encoding, found.value) == ("zstd", b"")
    assert "Frame requires too much memory" in found.problem


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(json.dumps(ORDER).encode())[:-12],  # cut short
        gzip.compress(b"x" * 1000)[:10] + b"\x00garbage" * 4,  # corrupt
        zstandard.ZstdCompressor().compress(b"y" * 1000)[:-5],
        b"\x28\xb5\x2f\xfd" + b"\xff" * 20,
        bytes(cramjam.snappy.compress(b"z" * 1000))[:-3],
        b"\xff\x06\x00\x00sNaPpY" + b"\x00\x08\x00\x00" + b"\x00" * 8,  # bad checksum
    ],
)
def test_truncated_or_corrupt_compression_says_so_and_raises_nothing(body):
    found = recognised(body)
    assert found is not None
    assert found.problem, found
    assert found.encoding.split(" ")[0] in ("gzip", "zstd", "snappy")


def test_a_cut_gzip_of_json_still_shows_the_text_it_holds():
    body = gzip.compress(json.dumps({"rows": list(range(5000))}).encode())[:2000]
    found = recognised(body)
    assert found.encoding == "gzip → text"
    assert found.value.startswith('{"rows": [0, 1, 2')
    assert "ends early" in found.problem


def test_text_that_happens_to_parse_as_msgpack_or_cbor_stays_text():
    # "’ok" in cp1252 is the MessagePack array [111, 107]; "1" is MessagePack 49.
    for body in ("’ok".encode("cp1252"), "“hi”".encode("cp1252"), b"1", b"\x92ok", b"\x82\x31\x32"):
        assert decoded(body) is None, body
    # Valid UTF-8 text is never read as either, whatever its first byte.
    assert decoded("ޑ Thaana starts with 0xde, a MessagePack map16".encode()) is None


def test_truncated_msgpack_and_cbor_are_not_recognised():
    assert decoded(msgpack.packb(ORDER)[:-3]) is None
    assert decoded(cbor2.dumps(ORDER)[:-3]) is None
    assert decoded(msgpack.packb(ORDER) + b"\x00") is None  # trailing bytes


def test_structures_nested_without_end_are_refused_not_crashed_on():
    assert decoded(b"\x91" * 100_000 + b"\x00") is None  # MessagePack's own stack limit
    assert decoded(b"\x81" * 100_000 + b"\x00") is None  # CBOR's
    deep = recognised(b"\x91" * 300 + b"\x00")  # within MessagePack's limit, past the page's
    assert (deep.encoding, deep.form, deep.problem) == (
        "MessagePack",
        "bytes",
        f"nested more than {decode.DEPTH} deep: not shown",
    )


def test_a_recursive_avro_schema_on_a_deeply_nested_body_does_not_crash_the_process():
    linked = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
    schema = compile_schema("list", "avro", avsc(linked), destination="*")
    assert recognised(b"\x02\x00", [schema], ["q"]).value == {"next": {"next": None}}
    # 100,000 deep: fastavro's compiled reader would overflow the C stack here.
    assert decoded(b"\x02" * 100_000 + b"\x00", [schema], ["q"]) is None


def test_bytes_that_are_not_of_the_schema_are_not_forced_into_it():
    schema = avro_schema()
    body = avro_bytes({"id": 1, "item": "cup", "note": None})
    assert decoded(body + b"\x00\x01", [schema], ["orders"]) is None  # bytes left over
    assert (
        decoded(b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", [schema], ["orders"]) is None
    )
    proto = protobuf_schema()
    assert decoded(b"\x0a\xff\x01ab", [proto], ["orders"]) is None  # a length past the end


def test_a_huge_integer_is_shown_by_its_size():
    found = recognised(cbor2.dumps({"n": 2**60000}))
    assert found.value == {"n": "(an integer of 60,001 bits)"}


# -- schemas that cannot be used are refused with a reason ----------------------


@pytest.mark.parametrize(
    ("kind", "content", "message_type", "words"),
    [
        ("avro", b"not json", "", "An Avro schema is JSON"),
        (
            "avro",
            b'{"type": "record", "name": "X", "fields": [{"name": "a"}]}',
            "",
            "missing 'type'",
        ),
        ("avro", b'{"type": "nosuch"}', "", "Not a valid Avro schema"),
        ("avro", b'{"type": "array", "items": "null"}', "", "takes no bytes per item"),
        ("protobuf", b"syntax = 'proto3'; message X {}", "", "Not a Protobuf FileDescriptorSet"),
        ("protobuf", order_descriptor_set(), "shop.Nope", "No message type 'shop.Nope'"),
        ("protobuf", order_descriptor_set(), "", "Name the message type: the set has shop.Order"),
        ("protobuf", order_descriptor_set(with_import=True), "shop.Order", "--include_imports"),
    ],
)
def test_a_schema_that_does_not_parse_is_refused_with_a_reason(kind, content, message_type, words):
    with pytest.raises(SchemaError) as refused:
        compile_schema("s", kind, content, message_type, destination="*")
    assert words in str(refused.value)


def test_a_schema_must_say_which_bodies_it_reads():
    with pytest.raises(SchemaError, match="a destination pattern, a header, or both"):
        compile_schema("s", "avro", avsc(ORDER_AVSC))
