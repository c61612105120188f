"""Liveness and readiness probes for the orchestrator and the load balancer."""

import logging

import redis
from flask import current_app
from marshmallow import Schema, fields

from allmine_auth.cache import get_redis
from allmine_auth.errors import ServiceUnavailable
from allmine_auth.store.outage import DATABASE_ERRORS, database_answers, outage_of
from allmine_auth.web.blueprint import Blueprint
from allmine_auth.web.resource import Resource

log = logging.getLogger(__name__)
blp = Blueprint("Health", __name__, description="Liveness and readiness probes.")


class StatusSchema(Schema):
    """A probe's answer."""

    status = fields.String(required=True, metadata={"example": "ok"})
    checks = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"example": {"database": "ok"}}
    )


@blp.route("/healthz")
class Liveness(Resource):
    """The process answers."""

    @blp.response(200, StatusSchema)
    def get(self):
        """Liveness: the process is up"""
        return {"status": "ok"}


@blp.route("/readyz")
class Readiness(Resource):
    """The process can serve: the database (and Redis, when configured) answer."""

    @blp.errors(503)
    @blp.response(200, StatusSchema)
    def get(self):
        """Readiness: database and Redis answer"""
        checks = {}
        try:
            database_answers()
            checks["database"] = "ok"
        except DATABASE_ERRORS as exc:
            # Logged once per outage with the API's failures, not once per probe.
            outage_of(current_app).failed(exc)
            raise ServiceUnavailable(
                "database: not answering", retry_after=current_app.config["DATABASE_RETRY_AFTER"]
            ) from None
        client = get_redis()
        if client is not None:
            try:
                client.ping()
                checks["redis"] = "ok"
            except redis.RedisError as exc:
                log.error("readiness: Redis not answering: %s", exc)
                raise ServiceUnavailable("redis: not answering") from None
        return {"status": "ok", "checks": checks}
