"""Validation: given PDF bytes, say what holds, each check on its own, and one
bottom line.

For every signature the report answers separately: is it intact (the signed bytes
hash to what was signed, and the signature over that hash verifies); does it cover
the whole file, or does only long-term validation data follow it; does its chain
reach a configured root; is its timestamp valid; was the signer's certificate
revoked at signing time; what changed after signing and does the certification
allow it; who signed; when. Document timestamps get the checks that apply to
them. ``ValidationReport.ok`` is the bottom line.

Each signature is validated with pyHanko's AdES long-term procedure
(``ades_lta_validation``, ETSI EN 319 102-1 5.6.3): the document timestamps are
checked first and then serve as proof that the signature and its revocation data
existed before the signer's certificate expired, so a B-LTA file still validates
after that, offline.

Two policies, chosen here on purpose:

- The signer's chain needs revocation data wherever its certificates declare
  where to find it (OCSP or CRL), fresh at the time the signature is proven to
  have existed.
- A timestamp authority's chain is checked against the revocation data the
  document carries, however old. The newest document timestamp must be
  validated "now", and offline there is nothing newer than what was embedded;
  requiring fresh data would make every archived file indeterminate a day after
  signing. A TSA key revoked *after* its last timestamp is thus not noticed
  offline; with ``allow_fetching`` pyHanko prefers fresh data when it gets it.

Validation only reads: the input is held as immutable ``bytes`` and nothing is
written. Size is bounded before parsing, pyHanko's decoding limits for untrusted
input apply while parsing, and the time budget is checked between signatures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import threading
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from asn1crypto import x509 as asn1_x509
from asn1crypto.crl import CertificateList
from asn1crypto.ocsp import OCSPResponse
from cryptography.hazmat.primitives import hashes
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESFailure, AdESIndeterminate, AdESPassed
from pyhanko.sign.diff_analysis import ModificationLevel, SuspiciousModification
from pyhanko.sign.validation import EmbeddedPdfSignature, SignatureCoverageLevel
from pyhanko.sign.validation.ades import (
    AdESBasicValidationResult,
    ades_basic_validation,
    ades_lta_validation,
    ades_with_time_validation,
)
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko.sign.validation.generic_cms import (
    extract_tst_data_iter,
    validate_sig_integrity,
)
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    FreshnessReqType,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

logger = logging.getLogger(__name__)

# "However old" for the TSA chain's revocation data (see the module docstring).
ANY_AGE = dt.timedelta(days=100 * 365)
# pyHanko allows one second between our clock and a responder's; real responders'
# clocks differ by more.
CLOCK_TOLERANCE = dt.timedelta(seconds=30)

_REVOKED = {
    AdESFailure.REVOKED,
    AdESIndeterminate.REVOKED_NO_POE,
    AdESIndeterminate.REVOKED_CA_NO_POE,
}
_NO_CHAIN = {
    AdESIndeterminate.NO_CERTIFICATE_CHAIN_FOUND,
    AdESIndeterminate.CERTIFICATE_CHAIN_GENERAL_FAILURE,
    AdESIndeterminate.CHAIN_CONSTRAINTS_FAILURE,
    AdESIndeterminate.NO_SIGNING_CERTIFICATE_FOUND,
}
_REVOCATION_UNKNOWN = {
    AdESIndeterminate.TRY_LATER,
    AdESIndeterminate.REVOCATION_OUT_OF_BOUNDS_NO_POE,
    AdESIndeterminate.OUT_OF_BOUNDS_NOT_REVOKED,
}


class Outcome(enum.Enum):
    """The answer of one check."""

    PASSED = "passed"
    """Verified."""

    FAILED = "failed"
    """Verified to be wrong: the file must not be relied on."""

    UNKNOWN = "unknown"
    """Could not be decided, e.g. revocation data missing offline. Not a pass."""

    NOT_APPLICABLE = "not applicable"
    """The check does not apply, e.g. the timestamp of a B-B signature."""


@dataclasses.dataclass(frozen=True)
class Check:
    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.PASSED, Outcome.NOT_APPLICABLE)

    def to_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "detail": self.detail}


def _passed(detail: str) -> Check:
    return Check(Outcome.PASSED, detail)


def _failed(detail: str) -> Check:
    return Check(Outcome.FAILED, detail)


def _unknown(detail: str) -> Check:
    return Check(Outcome.UNKNOWN, detail)


def _not_applicable(detail: str) -> Check:
    return Check(Outcome.NOT_APPLICABLE, detail)


@dataclasses.dataclass(frozen=True)
class SignatureReport:
    """What was verified about one signature or document timestamp."""

    field: str
    kind: str
    """``certification signature``, ``approval signature`` or ``document
    timestamp``."""

    intact: Check
    coverage: Check
    chain: Check
    timestamp: Check
    revocation: Check
    modifications: Check
    modification_level: str | None
    """``none``, ``lta_updates`` (only LTV data and document timestamps),
    ``form_filling``, ``annotations`` or ``other``; None when not analysed."""

    signer: str | None
    """The signer certificate's common name (its whole subject if it has none)."""

    signer_subject: str | None
    signer_serial: str | None
    signing_time: dt.datetime | None
    signing_time_source: str | None
    """``timestamp`` (proven by a TSA) or ``claimed`` (the signer's own clock)."""

    level: str | None
    """The PAdES level found: B-B, B-T, B-LT or B-LTA."""

    ades: str | None
    """pyHanko's AdES sub-indication, e.g. ``OK``, ``NO_CERTIFICATE_CHAIN_FOUND``."""

    @property
    def checks(self) -> dict[str, Check]:
        # Modifications before coverage: when both fail, it says why.
        return {
            "intact": self.intact,
            "modifications": self.modifications,
            "coverage": self.coverage,
            "chain": self.chain,
            "timestamp": self.timestamp,
            "revocation": self.revocation,
        }

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def problems(self) -> list[str]:
        return [
            f"{name}: {check.detail}"
            for name, check in self.checks.items()
            if not check.ok
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "ok": self.ok,
            "checks": {name: check.to_dict() for name, check in self.checks.items()},
            "modification_level": self.modification_level,
            "signer": self.signer,
            "signer_subject": self.signer_subject,
            "signer_serial": self.signer_serial,
            "signing_time": self.signing_time.isoformat()
            if self.signing_time
            else None,
            "signing_time_source": self.signing_time_source,
            "level": self.level,
            "ades": self.ades,
        }


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """The answer for one file: each signature's checks and one bottom line."""

    parses: Check
    signatures: tuple[SignatureReport, ...]
    ok: bool
    """The bottom line: the file parses, carries at least one signature, and every
    signature and document timestamp passed every check that applies."""

    summary: str
    """The bottom line in one sentence, naming the first problem."""

    @property
    def exit_code(self) -> int:
        """0 valid, 1 not valid, 2 not a readable signed PDF."""
        if self.ok:
            return 0
        return 1 if self.parses.ok and self.signatures else 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "parses": self.parses.to_dict(),
            "signatures": [signature.to_dict() for signature in self.signatures],
        }


def _unreadable(detail: str) -> ValidationReport:
    return ValidationReport(
        parses=_failed(detail), signatures=(), ok=False, summary=f"not valid: {detail}"
    )


class OutOfTime(Exception):
    """The validation budget ran out between two steps."""


class DocumentValidator:
    """Validates PDF bytes against configured trust roots. Thread-safe: every call
    builds its own pyHanko objects, over its thread's own trust roots."""

    def __init__(
        self,
        trust_roots: list[asn1_x509.Certificate],
        *,
        allow_fetching: bool = True,
        timeout: float = 10.0,
        max_document_bytes: int = 32 * 1024 * 1024,
        max_seconds: float = 20.0,
        max_signatures: int = 16,
        before_fetching: Callable[[], None] = lambda: None,
    ) -> None:
        if not trust_roots:
            raise ValueError("a validator needs at least one trust root")
        self.trust_roots = trust_roots
        self.allow_fetching = allow_fetching
        self.timeout = timeout
        self.max_document_bytes = max_document_bytes
        self.max_seconds = max_seconds
        self.max_signatures = max_signatures
        self._before_fetching = before_fetching
        self._root_der = [root.dump() for root in trust_roots]
        self._local = threading.local()

    @property
    def _trust(self) -> SimpleTrustManager:
        """This thread's own trust manager: asn1crypto parses certificates lazily
        and is not safe to share between threads, so each thread validating
        gets its own copies of the roots, made once from their DER bytes."""
        if not hasattr(self._local, "trust"):
            roots = [asn1_x509.Certificate.load(der) for der in self._root_der]
            self._local.trust = SimpleTrustManager.build(trust_roots=roots)
        return self._local.trust  # type: ignore[no-any-return]

    def specification(self, allow_fetching: bool) -> PdfSignatureValidationSpec:
        """The pyHanko validation settings this validator uses (see the module
        docstring for the two revocation policies)."""
        declared = RevocationCheckingRule.CHECK_IF_DECLARED
        signer_policy = CertValidationPolicySpec(
            trust_manager=self._trust,
            time_tolerance=CLOCK_TOLERANCE,
            revinfo_policy=CertRevTrustPolicy(
                RevocationCheckingPolicy(
                    ee_certificate_rule=declared, intermediate_ca_cert_rule=declared
                )
            ),
        )
        timestamp_policy = CertValidationPolicySpec(
            trust_manager=self._trust,
            time_tolerance=CLOCK_TOLERANCE,
            revinfo_policy=CertRevTrustPolicy(
                RevocationCheckingPolicy(
                    ee_certificate_rule=declared, intermediate_ca_cert_rule=declared
                ),
                freshness=ANY_AGE,
                freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION,
            ),
        )
        gathering = RevocationInfoGatheringSpec(
            online_fetching_rule=(
                RevinfoOnlineFetchingRule.NO_HISTORICAL_FETCH
                if allow_fetching
                else RevinfoOnlineFetchingRule.LOCAL_ONLY
            ),
            fetcher_backend=RequestsFetcherBackend(per_request_timeout=self.timeout),
        )
        return PdfSignatureValidationSpec(
            SignatureValidationSpec(
                cert_validation_policy=signer_policy,
                ts_cert_validation_policy=timestamp_policy,
                revinfo_gathering_policy=gathering,
            )
        )

    def validate(
        self,
        pdf: bytes,
        *,
        moment: dt.datetime | None = None,
        allow_fetching: bool | None = None,
    ) -> ValidationReport:
        """Validate ``pdf`` as of ``moment`` (default now). ``allow_fetching``
        overrides the configured choice for this call. Never raises for a bad
        document."""
        started = time.monotonic()
        fetching = self.allow_fetching if allow_fetching is None else allow_fetching
        moment = moment or dt.datetime.now(dt.UTC)
        if len(pdf) > self.max_document_bytes:
            return _unreadable(
                f"the file has {len(pdf)} bytes, more than the limit of "
                f"{self.max_document_bytes}"
            )
        if b"%PDF-" not in pdf[:1024]:
            return _unreadable("not a readable PDF: it has no %PDF- header")
        if not pdf.rstrip(b"\x00\t\n\r\f ").endswith(b"%%EOF"):
            # A reader would fall back to the last complete revision and could
            # find it validly signed; a cut-off file is damaged all the same.
            return _unreadable(
                "the file is incomplete: it does not end with %%EOF (truncated?)"
            )
        if fetching:
            self._before_fetching()

        try:
            reader = PdfFileReader(BytesIO(bytes(pdf)), strict=False)
            embedded = reader.embedded_signatures
        except (PdfError, ValueError, KeyError, TypeError, IndexError) as error:
            return _unreadable(f"not a readable PDF: {_say(error)}")
        except RecursionError:
            return _unreadable("not a readable PDF: objects nest too deeply")
        if not embedded:
            return ValidationReport(
                parses=_passed("the file is a readable PDF"),
                signatures=(),
                ok=False,
                summary="not valid: the file carries no signature",
            )
        if len(embedded) > self.max_signatures:
            return _unreadable(
                f"the file carries {len(embedded)} signatures and timestamps, more "
                f"than the limit of {self.max_signatures}"
            )

        spec = self.specification(fetching)
        timing = ValidationTimingInfo(
            validation_time=moment,
            best_signature_time=moment,
            point_in_time_validation=False,
        )
        reports: list[SignatureReport] = []
        try:
            for signature in embedded:
                self._check_time(started)
                if signature.sig_object_type == "/DocTimeStamp":
                    continue
                reports.append(self._signature(signature, spec, timing, embedded))
            certification = reports[0] if reports else None
            for signature in embedded:
                if signature.sig_object_type == "/DocTimeStamp":
                    self._check_time(started)
                    reports.append(self._document_timestamp(signature, certification))
        except OutOfTime:
            return ValidationReport(
                parses=_passed("the file is a readable PDF"),
                signatures=tuple(reports),
                ok=False,
                summary=(
                    f"not validated: it took more than {self.max_seconds:g} s "
                    "(CAMPUS_SIGNING_MAX_VALIDATION_SECONDS)"
                ),
            )
        except (PdfError, ValueError, KeyError, TypeError, IndexError) as error:
            # A file can read well enough to list its signatures and still be
            # broken where validation looks next.
            return _unreadable(f"the signature data is damaged: {_say(error)}")

        report = _bottom_line(reports)
        logger.info(
            "document_validated",
            extra={
                "ok": report.ok,
                "signatures": len(reports),
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return report

    def _check_time(self, started: float) -> None:
        # Between signatures only: one pyHanko call on a hostile file (deeply
        # nested objects within the decode limits) is not interrupted here. The
        # callers that need a deadline that holds validate in ``signing.workers``
        # children, killed on time.
        if time.monotonic() - started > self.max_seconds:
            raise OutOfTime

    def _signature(
        self,
        signature: EmbeddedPdfSignature,
        spec: PdfSignatureValidationSpec,
        timing: ValidationTimingInfo,
        embedded: list[EmbeddedPdfSignature],
    ) -> SignatureReport:
        signature.compute_integrity_info(  # type: ignore[no-untyped-call]  # pyHanko
            diff_policy=spec.diff_policy
        )
        later_timestamps = any(
            other.sig_object_type == "/DocTimeStamp"
            and other.signed_revision > signature.signed_revision
            for other in embedded
        )
        tokens = extract_tst_data_iter(signature.signer_info, signed=False)
        has_timestamp = next(tokens, None) is not None
        result = asyncio.run(
            self._procedure(signature, spec, timing, has_timestamp, later_timestamps)
        )
        status = result.api_status
        indication = result.ades_subindic
        certification = signature.docmdp_level is not None

        intact = status is not None and status.intact and status.valid
        if status is None or not status.intact:
            intact_check = _failed(
                "the signed bytes were changed: their digest does not match the "
                "signature"
            )
        elif not status.valid:
            intact_check = _failed("the signature value does not verify")
        else:
            intact_check = _passed("the signed bytes and the signature value verify")

        modifications, level_name = _modifications(signature)
        coverage = _coverage(signature.coverage, level_name)
        chain = _chain(result, intact)
        revocation = _revocation(result, chain)
        timestamp, signing_time, time_source = _timestamp(result, status, signature)

        has_dss = "/DSS" in signature.reader.root
        level = "B-B"
        if timestamp.outcome is not Outcome.NOT_APPLICABLE:
            level = "B-T"
            if has_dss:
                level = "B-LTA" if later_timestamps else "B-LT"

        signer_cert = signature.signer_cert
        return SignatureReport(
            field=str(signature.field_name),
            kind="certification signature" if certification else "approval signature",
            intact=intact_check,
            coverage=coverage,
            chain=chain,
            timestamp=timestamp,
            revocation=revocation,
            modifications=modifications,
            modification_level=level_name,
            signer=_common_name(signer_cert),
            signer_subject=str(signer_cert.subject.human_friendly),
            signer_serial=format(signer_cert.serial_number, "x"),
            signing_time=signing_time,
            signing_time_source=time_source,
            level=level,
            ades=_name(indication),
        )

    async def _procedure(
        self,
        signature: EmbeddedPdfSignature,
        spec: PdfSignatureValidationSpec,
        timing: ValidationTimingInfo,
        has_timestamp: bool,
        later_timestamps: bool,
    ) -> AdESBasicValidationResult[Any]:
        """The ETSI EN 319 102-1 procedure the signature's level calls for.

        pyHanko's long-term procedure alone would do for all levels, but it
        insists on a signature timestamp (B-B fails it), and, when no document
        timestamp follows, its past-validation step turns a passing B-T or B-LT
        result into NO_POE. So: LTA when document timestamps follow, "with
        time" for a timestamped signature, basic otherwise; the last two are
        given the document security store themselves.
        """
        if later_timestamps:
            return await ades_lta_validation(signature, spec, timing_info=timing)
        with_dss = dataclasses.replace(
            spec.signature_validation_spec,
            local_knowledge=_document_security_store(signature.reader),
        )
        procedure = (
            ades_with_time_validation if has_timestamp else ades_basic_validation
        )
        return await procedure(
            signature.signed_data,
            with_dss,
            timing_info=timing,
            raw_digest=signature.compute_digest(),
        )

    def _document_timestamp(
        self,
        signature: EmbeddedPdfSignature,
        certification: SignatureReport | None,
    ) -> SignatureReport:
        """A document timestamp's integrity is checked here; its chain was
        validated as the evidence record of the signatures before it."""
        signature.compute_integrity_info(skip_diff=True)  # type: ignore[no-untyped-call]
        signed_data = signature.signed_data
        tst_info = signed_data["encap_content_info"]["content"].parsed
        tsa_certificate = signature.signer_cert
        imprint = tst_info["message_imprint"]["hashed_message"].native
        digest_ok = imprint == signature.compute_digest()
        token_digest = hashes.Hash(get_pyca_cryptography_hash(signature.md_algorithm))
        token_digest.update(bytes(signed_data["encap_content_info"]["content"]))
        digest_match, signature_ok = validate_sig_integrity(
            signature.signer_info,
            tsa_certificate,
            expected_content_type="tst_info",
            actual_digest=token_digest.finalize(),
        )
        if not digest_ok:
            intact = _failed("the timestamped bytes were changed after timestamping")
        elif not (digest_match and signature_ok):
            intact = _failed("the timestamp token's signature does not verify")
        else:
            intact = _passed("the timestamped bytes and the token verify")

        evidence_ok = certification is not None and certification.ades == "OK"
        if certification is None:
            chain = _unknown("no signature precedes this timestamp")
        elif evidence_ok or certification.timestamp.ok:
            chain = _passed(
                "validated as part of the chain of evidence of the signature before it"
            )
        else:
            chain = _unknown(
                "not established: the signature before it did not validate"
            )
        if signature.coverage == SignatureCoverageLevel.ENTIRE_FILE:
            coverage = _passed("covers the whole file")
        elif signature.coverage == SignatureCoverageLevel.ENTIRE_REVISION:
            coverage = (
                _passed("only long-term validation data follows")
                if certification is not None and certification.modifications.ok
                else _failed("followed by changes (see the signature's modifications)")
            )
        else:
            coverage = _failed("the covered byte range is irregular")
        gen_time = tst_info["gen_time"].native
        return SignatureReport(
            field=str(signature.field_name),
            kind="document timestamp",
            intact=intact,
            coverage=coverage,
            chain=chain,
            timestamp=_passed(f"issued at {gen_time.isoformat()}"),
            revocation=_not_applicable("checked with the chain"),
            modifications=_not_applicable("judged by the certification signature"),
            modification_level=None,
            signer=_common_name(tsa_certificate),
            signer_subject=str(tsa_certificate.subject.human_friendly),
            signer_serial=format(tsa_certificate.serial_number, "x"),
            signing_time=gen_time,
            signing_time_source="timestamp",
            level=None,
            ades=None,
        )


def _document_security_store(reader: PdfFileReader) -> LocalKnowledge:
    """Certificates, OCSP answers and CRLs stored in the file (B-LT)."""
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return LocalKnowledge()
    ocsps = [
        container
        for answer in dss.ocsps
        for container in OCSPContainer.load_multi(
            OCSPResponse.load(
                answer.get_object().read_data(DecodePurpose.OCSP_RESPONSE)
            )
        )
    ]
    crls = [
        CRLContainer(
            CertificateList.load(crl.get_object().read_data(DecodePurpose.CRL))
        )
        for crl in dss.crls
    ]
    return LocalKnowledge(
        known_ocsps=ocsps, known_crls=crls, known_certs=list(dss.load_certs())
    )


def _say(error: BaseException) -> str:
    """The first line of a library's message, for people."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def _modifications(signature: EmbeddedPdfSignature) -> tuple[Check, str | None]:
    """Whether what follows the signed revision is allowed by the certification."""
    diff = signature.diff_result
    docmdp = signature.docmdp_level
    if diff is None:
        return _unknown("not analysed"), None
    if isinstance(diff, SuspiciousModification):
        return (
            _failed(
                f"changed after signing in a way no signature allows: {_say(diff)}"
            ),
            ModificationLevel.OTHER.name.lower(),
        )
    level = diff.modification_level
    name = level.name.lower()
    if level == ModificationLevel.NONE:
        return _passed("nothing changed after signing"), name
    if level == ModificationLevel.LTA_UPDATES:
        return _passed("only long-term validation data was added"), name
    allowed = docmdp is not None and level.value <= docmdp.value
    described = {
        ModificationLevel.FORM_FILLING: "form fields were filled in or added",
        ModificationLevel.ANNOTATIONS: "annotations were added or changed",
        ModificationLevel.OTHER: "the document's content was changed",
    }.get(level, name)
    if allowed:
        return _passed(f"{described}, which the signature allows"), name
    permission = (
        "the certification allows no changes"
        if docmdp is not None and docmdp.value == 1
        else f"the signature allows only {docmdp.name.lower() if docmdp else 'none'}"
    )
    fields = sorted(getattr(diff, "changed_form_fields", ()) or ())
    extra = f" (fields: {', '.join(fields)})" if fields else ""
    return _failed(f"after signing, {described}{extra}; {permission}"), name


def _coverage(
    coverage: SignatureCoverageLevel | None, modification_level: str | None
) -> Check:
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        return _passed("covers the whole file")
    if coverage == SignatureCoverageLevel.ENTIRE_REVISION:
        if modification_level in ("none", "lta_updates"):
            return _passed("only long-term validation data follows the signature")
        return _failed("later revisions add more than long-term validation data")
    return _failed(
        "the signature covers an irregular byte range: the file was rearranged"
    )


def _chain(result: AdESBasicValidationResult[Any], intact: bool) -> Check:
    status = result.api_status
    indication = result.ades_subindic
    if not intact:
        return _unknown("not checked: the signature is not intact")
    if indication == AdESPassed.OK and status is not None and status.trusted:
        path = status.validation_path
        root = path[0] if path is not None else None
        name = root.subject.human_friendly if root is not None else "a trust root"
        return _passed(f"chains to the configured root {name}")
    if indication in _NO_CHAIN or (
        status is not None
        and not status.trusted
        and indication not in _REVOKED
        and indication not in _REVOCATION_UNKNOWN
    ):
        return _failed(
            "the signer's certificate does not chain to a configured trust root "
            f"({_indication(result)})"
        )
    if indication in _REVOKED:
        return _failed(f"the chain holds a revoked certificate ({_indication(result)})")
    return _unknown(f"could not be established ({_indication(result)})")


def _revocation(result: AdESBasicValidationResult[Any], chain: Check) -> Check:
    indication = result.ades_subindic
    status = result.api_status
    if indication in _REVOKED or (status is not None and status.revoked):
        details = status.revocation_details if status is not None else None
        when = (
            f" on {details.revocation_date.isoformat()}" if details is not None else ""
        )
        return _failed(f"the signer's certificate was revoked{when}, before signing")
    if indication in _REVOCATION_UNKNOWN:
        return _unknown(
            "no usable revocation data for the signing time "
            f"({_indication(result)}); offline, only embedded data counts"
        )
    if chain.outcome is Outcome.PASSED:
        return _passed("not revoked at signing time")
    return _unknown("not established: the chain did not validate")


def _timestamp(
    result: AdESBasicValidationResult[Any],
    status: Any,
    signature: EmbeddedPdfSignature,
) -> tuple[Check, dt.datetime | None, str | None]:
    token = status.timestamp_validity if status is not None else None
    if token is None:
        claimed = status.signer_reported_dt if status is not None else None
        claimed = claimed or signature.self_reported_timestamp
        return (
            _not_applicable(
                "no signature timestamp (B-B): the time is the signer's claim"
            ),
            claimed,
            "claimed" if claimed else None,
        )
    # Only the long-term procedure reports the timestamp's own AdES result.
    ts_result = getattr(result, "signature_timestamp_status", None)
    passed = (
        token.intact
        and token.valid
        and (
            token.trusted
            or (ts_result is not None and ts_result.ades_subindic == AdESPassed.OK)
        )
    )
    if passed:
        return (
            _passed(f"issued by {token.signing_cert.subject.human_friendly}"),
            token.timestamp,
            "timestamp",
        )
    if not (token.intact and token.valid):
        return _failed("the signature timestamp does not verify"), None, None
    return (
        _failed("the timestamp authority is not trusted"),
        token.timestamp,
        "timestamp",
    )


def _common_name(certificate: asn1_x509.Certificate) -> str:
    name = certificate.subject.native.get("common_name")
    return str(name) if name else str(certificate.subject.human_friendly)


def _name(indication: Any) -> str | None:
    """``OK``, ``NO_POE``, ...: AdES sub-indications are enum members."""
    return str(indication.name) if indication is not None else None


def _indication(result: AdESBasicValidationResult[Any]) -> str:
    name = _name(result.ades_subindic) or "no indication"
    return f"{name}: {result.failure_msg}" if result.failure_msg else name


def _bottom_line(reports: list[SignatureReport]) -> ValidationReport:
    parses = _passed("the file is a readable PDF")
    signatures = [r for r in reports if r.kind != "document timestamp"]
    if not signatures:
        return ValidationReport(
            parses, tuple(reports), False, "not valid: the file carries no signature"
        )
    for report in reports:
        if not report.ok:
            return ValidationReport(
                parses,
                tuple(reports),
                False,
                f"not valid: {report.kind} {report.field}: {report.problems[0]}",
            )
    first = signatures[0]
    when = (
        f" at {first.signing_time:%Y-%m-%d %H:%M:%S %Z}" if first.signing_time else ""
    )
    return ValidationReport(
        parses,
        tuple(reports),
        True,
        f"valid: signed by {first.signer}{when} ({first.level})",
    )
