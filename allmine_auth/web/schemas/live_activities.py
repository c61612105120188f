"""Request and response schemas of the Live Activity endpoints."""

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from allmine_auth.web.schemas.auth import FullMatch, Text, UtcTimestamp, attr

# APNs push tokens are hex, an even number of digits (32 bytes and more for Live Activity tokens).
PUSH_TOKEN = FullMatch(r"^(?:[0-9A-Fa-f]{2}){16,256}$", error="An APNs push token: 32 to 512 hex digits.")
KIND = FullMatch(
    r"^[a-z][a-z0-9_]{0,31}$", error="Lower-case letters, digits or '_', starting with a letter."
)
ACTIVITY_EXAMPLE = "5B1D2C3A-9F8E-4D7C-8B6A-1E2F3A4B5C6D"  # ActivityKit's Activity.id, a UUID


class LiveActivityBodySchema(ma.Schema):
    """``PUT /live-activities/{activityId}`` body."""

    pushToken = Text(
        required=True,
        validate=PUSH_TOKEN,
        metadata={"example": "80f2c4a1d3e5b7a9c1e3f5a7b9d1e3f580f2c4a1d3e5b7a9c1e3f5a7b9d1e3f5"},
    )
    kind = Text(
        required=True,
        validate=KIND,
        metadata={"example": "livestream", "description": "What the activity shows: `livestream`, `call`..."},
    )
    referenceId = Text(
        load_default=None,
        allow_none=True,
        validate=validate.Length(1, 128),
        metadata={"example": "stream-8842", "description": "What it shows (a stream's or a call's id)."},
    )
    expiresAt = fields.AwareDateTime(
        load_default=None,
        allow_none=True,
        default_timezone=UTC,
        metadata={"description": "When it ends; at most 12 hours from now, the default."},
    )


class LiveActivitySchema(ma.Schema):
    """A registered Live Activity."""

    activityId = attr("activity_id", allow_none=False, metadata={"example": ACTIVITY_EXAMPLE})
    sessionId = fields.UUID(attribute="session_id", dump_only=True)
    pushToken = attr("push_token", allow_none=False)
    kind = attr("kind", allow_none=False, metadata={"example": "livestream"})
    referenceId = attr("reference_id", metadata={"example": "stream-8842"})
    expiresAt = attr("expires_at", UtcTimestamp, allow_none=False)
    createdAt = attr("created_at", UtcTimestamp, allow_none=False)
    updatedAt = attr("updated_at", UtcTimestamp, allow_none=False)


class DeletedActivitySchema(ma.Schema):
    """What a delete answers."""

    activityId = fields.String(required=True, metadata={"example": ACTIVITY_EXAMPLE})
    deleted = fields.Boolean(required=True, metadata={"example": True})
