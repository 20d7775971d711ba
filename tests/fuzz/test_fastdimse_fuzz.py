"""Property-based fuzzing of the fast DIMSE reader (:func:`dicom_node.fastdimse.parse_store_command`).

The contract: for any bytes it returns a :class:`StoreRequest` or ``None`` (the message then
goes to pynetdicom) and never raises — it runs inside the association's reactor, where an
exception would kill the association. A well-formed C-STORE-RQ with a data set is read
exactly (the same fields pydicom decodes from the same bytes).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from dicom_node.fastdimse import StoreRequest, parse_store_command
from tests.fuzz.corpus import encode_store_command
from tests.fuzz.findings import save_failure
from tests.fuzz.mutate import byte_mutations, fuzz_settings

UIDS = st.from_regex(r"\A[12](\.[1-9][0-9]{0,8}){1,5}\Z", fullmatch=True)
RAW_UIDS = UIDS.map(str.encode) | st.binary(max_size=70)


def check_parse(raw: bytes) -> StoreRequest | None:
    """Parse and hold the reader to its contract."""
    try:
        req = parse_store_command(raw)
    except BaseException as exc:
        save_failure("dimse", {"input.bin": raw}, exc)
        raise
    assert req is None or isinstance(req, StoreRequest)
    if req is not None:
        assert 0 <= req.message_id <= 0xFFFF
        assert req.sop_class and req.sop_instance
        assert isinstance(req.sop_class, str) and isinstance(req.sop_instance, str)
    return req


@st.composite
def commands(draw: Any) -> bytes:
    """C-STORE-RQ command sets, well-formed or not, from the field level."""
    return encode_store_command(
        draw(st.integers(0, 0xFFFF)),
        draw(RAW_UIDS),
        draw(RAW_UIDS),
        priority=draw(st.sampled_from([0, 1, 2]) | st.integers(0, 0xFFFF)),
        dataset_type=draw(st.sampled_from([0x0000, 0x0101, 0x0102]) | st.integers(0, 0xFFFF)),
        command=draw(st.sampled_from([0x0001, 0x0030, 0x8001]) | st.integers(0, 0xFFFF)),
        move_ae=draw(st.none() | st.binary(max_size=18)),
        move_id=draw(st.none() | st.integers(0, 0xFFFF)),
        group_length=draw(st.booleans()),
    )


@fuzz_settings(max_examples=600)
@given(commands())
def test_generated_commands_never_raise(raw: bytes) -> None:
    check_parse(raw)


@fuzz_settings(max_examples=800)
@given(st.data())
def test_damaged_commands_never_raise(data: Any) -> None:
    raw = data.draw(commands())
    check_parse(data.draw(byte_mutations(raw, max_ops=6)))


@fuzz_settings(max_examples=300)
@given(st.binary(max_size=300))
@example(b"\x00\x00\x00\x00\x04\x00\x00\x00")
@example(b"\x00\x00\x00\x00\xff\xff\xff\xff")
@example(b"\x00\x00\x02\x00\x03\x00\x00\x00\xff\xfe\x00")
def test_random_bytes_never_raise(raw: bytes) -> None:
    check_parse(raw)


@fuzz_settings(max_examples=400)
@given(
    st.integers(0, 0xFFFF),
    UIDS,
    UIDS,
    st.sampled_from([0, 1, 2]),
    st.none() | st.from_regex(r"\A[A-Z][A-Z0-9_]{0,15}\Z", fullmatch=True),
    st.booleans(),
)
def test_well_formed_request_is_read_as_pydicom_reads_it(
    message_id: int, sop_class: str, sop_instance: str, priority: int, move_ae: str | None, group_length: bool,
) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    raw = encode_store_command(message_id, sop_class.encode(), sop_instance.encode(), priority=priority,
                               move_ae=None if move_ae is None else move_ae.encode(),
                               move_id=None if move_ae is None else 7, group_length=group_length)
    req = check_parse(raw)
    assert req == StoreRequest(message_id, sop_class, sop_instance)
    ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=True, is_little_endian=True)  # type: ignore[arg-type]
    assert (ds.MessageID, ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (message_id, sop_class, sop_instance)
    if group_length:
        assert ds.CommandGroupLength == len(raw) - 12


@fuzz_settings(max_examples=200)
@given(st.integers(0, 0xFFFF), UIDS, UIDS, st.integers(1, 40), st.booleans())
def test_truncated_request_is_left_to_pynetdicom(
    message_id: int, sop_class: str, sop_instance: str, cut: int, group_length: bool,
) -> None:
    raw = encode_store_command(message_id, sop_class.encode(), sop_instance.encode(), group_length=group_length)
    assert check_parse(raw[:-cut]) is None


def test_empty_uid_or_no_data_set_is_left_to_pynetdicom() -> None:
    """An empty or missing SOP Instance UID, or a request without a data set, is not read here."""
    assert check_parse(encode_store_command(1, b"1.2.3", b"")) is None
    assert check_parse(encode_store_command(1, b"", b"1.2.3")) is None
    assert check_parse(encode_store_command(1, b"1.2.3", b"1.2.4", dataset_type=0x0101)) is None
    no_uid = b"".join(struct.pack("<HHI", 0, el, 2) + struct.pack("<H", v)
                      for el, v in ((0x0100, 1), (0x0110, 1), (0x0700, 0), (0x0800, 0)))
    assert check_parse(no_uid) is None
