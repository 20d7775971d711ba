"""The fast path's direct response encoder matches pynetdicom's own encoding byte for byte."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from dicom_node.fastpath import encode_response_command


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.840.113619.2.55.3.604688119.969.1268071029.320"])
def test_c_store_response_encoding_matches_pynetdicom(uid: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rsp.AffectedSOPInstanceUID = uid
    rsp.Status = 0x0000
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert encode_response_command(0x8001, 7, 0, "1.2.840.10008.5.1.4.1.1.4", uid) == expected


def test_c_echo_response_encoding_matches_pynetdicom() -> None:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 65535
    rsp.AffectedSOPClassUID = "1.2.840.10008.1.1"
    rsp.Status = 0x0000
    msg = C_ECHO_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert encode_response_command(0x8030, 65535, 0, "1.2.840.10008.1.1", None) == expected
