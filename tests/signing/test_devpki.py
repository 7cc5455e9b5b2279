"""The development PKI: made once, with the usages a document signer needs, and
its TSA, OCSP responder and CRLs answering on the port kept with it."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from asn1crypto import crl, ocsp, tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from signing.devpki import DOCUMENT_SIGNING, DevelopmentPKI, ensure_served
from signing.errors import TrustServiceUnavailable
from signing.keys import asn1_certificate


def test_second_ensure_changes_nothing(pki: DevelopmentPKI) -> None:
    before = {p.name: p.read_bytes() for p in pki.path.iterdir()}

    again = DevelopmentPKI.ensure(pki.path)

    assert again.port == pki.port
    assert {p.name: p.read_bytes() for p in pki.path.iterdir()} == before


def test_signer_certificates_carry_document_signing_usages(pki: DevelopmentPKI) -> None:
    for signer in ("rsa", "ecdsa"):
        certificate = pki.certificate(f"signer-{signer}")
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.digital_signature and usage.value.content_commitment
        assert not usage.value.key_cert_sign
        extended = certificate.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
        assert DOCUMENT_SIGNING in extended
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
        assert f"{pki.base_url}/ocsp" in {d.access_location.value for d in access}


def test_tsa_and_ocsp_certificates_are_restricted_to_their_job(
    pki: DevelopmentPKI,
) -> None:
    tsa_usage = pki.certificate("tsa").extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert tsa_usage.critical
    assert list(tsa_usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    responder = pki.certificate("ocsp")
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert (
        ExtendedKeyUsageOID.OCSP_SIGNING
        in responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )


def test_tsa_answers_rfc3161(pki: DevelopmentPKI) -> None:
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": b"\x01" * 32,
            },
            "nonce": 42,
            "cert_req": True,
        }
    )

    answer = requests.post(
        pki.tsa_url,
        data=request.dump(),
        headers={"Content-Type": "application/timestamp-query"},
        timeout=5,
    )

    response = tsp.TimeStampResp.load(answer.content)
    assert response["status"]["status"].native == "granted"
    info = response["time_stamp_token"]["content"]["encap_content_info"]["content"]
    assert info.parsed["nonce"].native == 42


def _ocsp_status(pki: DevelopmentPKI, signer: str, method: str = "POST") -> str:
    issuer = asn1_certificate(pki.certificate("ca"))
    subject = asn1_certificate(pki.certificate(f"signer-{signer}"))
    request = ocsp.OCSPRequest(
        {
            "tbs_request": {
                "request_list": [
                    {
                        "req_cert": {
                            "hash_algorithm": {"algorithm": "sha256"},
                            "issuer_name_hash": issuer.subject.sha256,
                            "issuer_key_hash": issuer.public_key.sha256,
                            "serial_number": subject.serial_number,
                        }
                    }
                ]
            }
        }
    )
    if method == "GET":
        encoded = quote(base64.b64encode(request.dump()).decode(), safe="")
        answer = requests.get(f"{pki.base_url}/ocsp/{encoded}", timeout=5)
    else:
        answer = requests.post(
            f"{pki.base_url}/ocsp",
            data=request.dump(),
            headers={"Content-Type": "application/ocsp-request"},
            timeout=5,
        )
    response = ocsp.OCSPResponse.load(answer.content)
    single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
    return str(single["cert_status"].name)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_ocsp_says_good_and_revoked(pki: DevelopmentPKI, method: str) -> None:
    assert _ocsp_status(pki, "rsa", method) == "good"
    assert _ocsp_status(pki, "revoked", method) == "revoked"


def test_ca_crl_lists_the_revoked_signer(pki: DevelopmentPKI) -> None:
    answer = requests.get(f"{pki.base_url}/crl/ca.crl", timeout=5)

    revoked = crl.CertificateList.load(answer.content)["tbs_cert_list"][
        "revoked_certificates"
    ]
    serials = {entry["user_certificate"].native for entry in revoked}
    assert serials == {pki.certificate("signer-revoked").serial_number}


def test_a_stranger_on_the_pki_port_is_reported(
    pki: DevelopmentPKI, tmp_path: Path
) -> None:
    import json
    import shutil

    # A copy of the session's PKI whose port someone else holds.
    copy = tmp_path / "dev-pki"
    shutil.copytree(pki.path, copy)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        manifest = {**pki.manifest, "port": squatter.getsockname()[1]}
        (copy / "manifest.json").write_text(json.dumps(manifest))

        with pytest.raises(TrustServiceUnavailable, match="taken by another program"):
            ensure_served(DevelopmentPKI.load(copy))


def test_services_already_served_by_another_process_are_used(
    pki: DevelopmentPKI,
) -> None:
    from signing import devpki

    # This process serves the PKI; forgetting that makes the next call see what
    # a second process (e.g. `flask signing sign` beside the server) sees.
    key = pki.path.resolve()
    server = devpki._served.pop(key)
    try:
        ensure_served(pki)

        assert key not in devpki._served
        assert devpki._serves_this_pki(pki)
    finally:
        devpki._served[key] = server
