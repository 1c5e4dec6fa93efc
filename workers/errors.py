"""The errors of the send path, and the one place provider errors are translated.

    DeclicError
     ├── SendError                  a message SES did not accept
     │    ├── PermanentSendError    rejected, bad address, unverified sender: never retried
     │    └── TransientSendError    throttling, timeouts, 5xx: retried with backoff and jitter
     │         ├── ThrottledError   SES said slow down (429, Throttling, MaxSendingRate)
     │         └── AmbiguousSendError  no answer after the request left: SES may have accepted it
     └── AttachmentError            an attachment could not be fetched (``transient`` says which)

    ConfigurationError              outside the tree, so no handler of DeclicError swallows it
"""

from __future__ import annotations


class DeclicError(Exception):
    """Base of the errors a stage may raise and its task turns into an outcome."""


class SendError(DeclicError):
    pass


class PermanentSendError(SendError):
    pass


class TransientSendError(SendError):
    pass


class ThrottledError(TransientSendError):
    pass


class AmbiguousSendError(TransientSendError):
    """The request reached SES but no answer came back: resolved from SES's Send notification."""


class AttachmentError(DeclicError):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ConfigurationError(Exception):
    """Déclic is configured wrongly; fix the named setting and restart."""
