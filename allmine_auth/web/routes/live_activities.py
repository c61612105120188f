"""The Live Activities blueprint: thin views over ``services``."""

import uuid

from flask_jwt_extended import get_jwt, jwt_required

from allmine_auth.rules import live_activities
from allmine_auth.web.blueprint import Blueprint
from allmine_auth.web.resource import Resource
from allmine_auth.web.routes.auth import BEARER, WARNING
from allmine_auth.web.schemas.live_activities import (
    DeletedActivitySchema,
    LiveActivityBodySchema,
    LiveActivitySchema,
)

blp = Blueprint(
    "Live Activities",
    __name__,
    url_prefix="/api/v1/live-activities",
    description="iOS Live Activity kayıtları / Live Activities of a login session (APNs push tokens).",
)


def caller():
    """The token's ``(user id, session id)``."""
    claims = get_jwt()
    return uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])


@blp.route("")
class LiveActivities(Resource):
    """The caller's Live Activities."""

    @blp.doc(security=BEARER, description="Kullanıcının süresi dolmamış Live Activity kayıtlarını listeler.")
    @jwt_required()
    @blp.errors(401)
    @blp.response(200, LiveActivitySchema(many=True))
    def get(self):
        """Live Activity kayıtlarını listele"""
        user_id, _ = caller()
        return live_activities.live_activities(user_id)


@blp.route("/<activity_id>")
class LiveActivityItem(Resource):
    """One Live Activity of the caller."""

    @blp.doc(
        security=BEARER,
        description=f"{WARNING} Mobil uygulama başlattığı Live Activity kaydını (APNs push token'ı ile) bu "
        "oturum için kaydeder veya günceller; oturum sona erince kayıt silinir.",
    )
    @jwt_required()
    @blp.errors(400, 401, 413, 415)
    @blp.arguments(LiveActivityBodySchema())
    @blp.response(200, LiveActivitySchema)
    def put(self, body, activity_id):
        """Live Activity kaydet"""
        user_id, session_id = caller()
        fields = {
            "push_token": body["pushToken"],
            "kind": body["kind"],
            "reference_id": body["referenceId"],
            "expires_at": body["expiresAt"],
        }
        return live_activities.register_activity(user_id, session_id, activity_id, fields)

    @blp.doc(
        security=BEARER,
        description=f"{WARNING} Mobil uygulama local olarak dismiss edilen veya manuel kapatilan "
        "Live Activity kaydini backend tarafinda temizlemek icin bu endpointi cagirir.",
    )
    @jwt_required()
    @blp.errors(400, 401, 404)
    @blp.response(200, DeletedActivitySchema)
    def delete(self, activity_id):
        """Delete runtime Live Activity session"""
        user_id, _ = caller()
        live_activities.delete_activity(user_id, activity_id)
        return {"activityId": activity_id, "deleted": True}
