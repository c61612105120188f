"""Errors the services raise; one handler in ``envelope`` renders each as the envelope.

Services take and return plain values and never see a request, so they
signal failures with these exceptions instead of ``abort``.
"""

CONFLICT_MESSAGE = "Resource already exists or cannot be changed in its current state"


class ServiceError(Exception):
    """A failure with an HTTP status, a first error text and optional detail lines."""

    status = 400
    message = "Validation failed"

    def __init__(self, *details, message=None, retry_after=None, keep_records=False):
        super().__init__(message or self.message, *details)
        if message is not None:
            self.message = message
        self.details = list(details)
        self.retry_after = retry_after
        # Whether the unit of work commits what the request wrote before this error (a failed check's
        # count, a refused send's audit row) instead of rolling it back.
        self.keep_records = keep_records

    @property
    def errors(self):
        """The envelope's ``errors`` list: the message, then the details."""
        return [self.message, *self.details]


class ValidationFailed(ServiceError):
    """400: the input is well-formed JSON but not acceptable (``field: message`` details)."""


class InvalidCode(ServiceError):
    """401: unknown, wrong, expired or used one-time code (one text for all, on purpose)."""

    status = 401
    message = "Invalid or expired code"


class Unauthorized(ServiceError):
    """401 for a token problem found by the services (e.g. a refresh token of a dead session)."""

    status = 401
    message = "Missing or invalid token"


class TokenRevoked(Unauthorized):
    """401: the token's session has ended."""

    message = "Token has been revoked"


class NotFound(ServiceError):
    """404: the resource does not exist (or is not the caller's)."""

    status = 404
    message = "Resource not found"


class Conflict(ServiceError):
    """409: the resource exists already or can't change in its current state."""

    status = 409
    message = CONFLICT_MESSAGE


class RateLimited(ServiceError):
    """429: a per-destination or budget limit; ``retry_after`` in seconds."""

    status = 429
    message = "Too many requests"


class ServiceUnavailable(ServiceError):
    """503: a dependency the service needs (the database, Redis) is not answering; try again shortly."""

    status = 503
    message = "Service unavailable"


class AttestationRequired(ServiceError):
    """428: an SMS send under suspicion needs a client attestation (``X-Client-Attestation``) first."""

    status = 428
    message = "Attestation required"


class DeliveryFailed(ServiceError):
    """500: the SMS or email could not be handed to the provider."""

    status = 500
    message = "Internal server error"
