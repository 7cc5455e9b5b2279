"""What can go wrong when signing, and the one place library errors become ours.

The tree::

    SigningError                   signing could not be done; nothing was produced
    ├── SigningConfigError         a CAMPUS_SIGNING_* setting is missing or unusable
    ├── KeyUnavailable             a key or its certificate cannot be loaded or used
    │                              (file, passphrase, PIN, token, expired certificate)
    ├── SignerCertificateRejected  the signer's chain does not validate now: revoked,
    │                              expired or not issued under a trust root
    ├── TrustServiceUnavailable    a TSA, OCSP responder or CRL server did not answer
    │                              in time or answered with an error; carries ``url``
    └── DocumentUnreadable         the input is not a PDF we can sign: not a PDF,
                                   encrypted, too large, or already certified

``SigningConfigError`` is also a ``campus.settings.SettingsError``, so production
start-up refuses a bad signing configuration exactly as it refuses other settings.

Validation never raises for a bad *document*: a truncated or forged file is an
answer (``signing.validator.ValidationReport``), not an error. It raises only for
what the operator must fix: configuration.

pyHanko, pyhanko-certvalidator, python-pkcs11 and requests raise their own errors;
``translated`` turns them into the tree above, chaining the cause, and is the only
place that knows their names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from campus.settings import SettingsError

logger = logging.getLogger(__name__)


class SigningError(RuntimeError):
    """Signing could not be done; nothing was produced."""


class SigningConfigError(SigningError, SettingsError):
    """A ``CAMPUS_SIGNING_*`` setting is missing or holds an unusable value."""


class KeyUnavailable(SigningError):
    """A signing key or its certificate cannot be loaded or used."""


class SignerCertificateRejected(SigningError):
    """The signer's certificate chain does not validate at signing time."""


class TrustServiceUnavailable(SigningError):
    """A timestamp authority or revocation server failed to answer properly."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message if url is None else f"{message} ({url})")
        self.url = url


class DocumentUnreadable(SigningError):
    """The input is not a PDF this service can sign."""


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a call into pyHanko or a key backend, turning its errors into ours.

    ``action`` names what was attempted (``"sign"``, ``"load key"``), for the
    message. Our own errors pass through unchanged.
    """
    import requests
    from pkcs11 import exceptions as pkcs11_errors
    from pyhanko.pdf_utils.misc import PdfReadError
    from pyhanko.sign.general import SigningError as PyHankoSigningError
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError
    from pyhanko_certvalidator.errors import (
        InsufficientRevinfoError,
        PathBuildingError,
        PathValidationError,
        RevokedError,
    )

    try:
        yield
    except SigningError:
        raise
    except TimestampRequestError as error:
        raise TrustServiceUnavailable(
            f"{action}: the timestamp authority failed: {error}"
        ) from error
    except requests.Timeout as error:
        raise TrustServiceUnavailable(
            f"{action}: a trust service did not answer in time",
            url=getattr(error.request, "url", None),
        ) from error
    except requests.RequestException as error:
        raise TrustServiceUnavailable(
            f"{action}: a trust service could not be reached: {error}",
            url=getattr(error.request, "url", None),
        ) from error
    except RevokedError as error:
        raise SignerCertificateRejected(
            f"{action}: the signer certificate is revoked: {error}"
        ) from error
    except InsufficientRevinfoError as error:
        raise TrustServiceUnavailable(
            f"{action}: no usable revocation information for the signer's "
            f"chain (is the OCSP responder or CRL server up?): {error}"
        ) from error
    except (PathBuildingError, PathValidationError) as error:
        raise SignerCertificateRejected(
            f"{action}: the signer certificate does not validate: {error}"
        ) from error
    except pkcs11_errors.PKCS11Error as error:
        raise KeyUnavailable(
            f"{action}: the PKCS#11 token refused: {type(error).__name__} {error}"
        ) from error
    except PdfReadError as error:
        raise DocumentUnreadable(f"{action}: not a readable PDF: {error}") from error
    except PyHankoSigningError as error:
        # pyHanko wraps what went wrong while validating the signer before
        # signing in its own SigningError; the cause tells what it was.
        cause = error.__cause__
        if isinstance(cause, RevokedError):
            raise SignerCertificateRejected(
                f"{action}: the signer certificate is revoked: {cause}"
            ) from error
        if isinstance(cause, InsufficientRevinfoError | requests.RequestException):
            raise TrustServiceUnavailable(
                f"{action}: no usable revocation information for the signer's "
                f"chain (is the OCSP responder or CRL server up?): {cause}"
            ) from error
        if isinstance(cause, PathBuildingError | PathValidationError):
            raise SignerCertificateRejected(
                f"{action}: the signer certificate does not validate: {cause}"
            ) from error
        raise SigningError(f"{action}: {error}") from error
