"""JSON in and out: the app's JSON provider (compact, the envelope's key order) and the strict decoder.

Requests are read as strict JSON (RFC 8259): no ``NaN`` or ``Infinity``, no number a float can't hold.
"""

import json
import math

from flask.json.provider import DefaultJSONProvider


class EnvelopeJSONProvider(DefaultJSONProvider):
    """JSON in the envelope's own key order (``isSuccess`` first), compact."""

    sort_keys = False
    compact = True

    def dumps(self, obj, **kwargs):
        """Compact here too (Flask makes only ``response()`` compact): cached bodies look like the rest."""
        kwargs.setdefault("separators", (",", ":"))
        return super().dumps(obj, **kwargs)


def refuse_constant(name):
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


def finite_float(text):
    """A JSON number as a float; one too large for a float (``1e999``, read as infinity) is refused."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


# Built once: ``json.loads`` with hooks would build a decoder per request.
STRICT_JSON = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float)
