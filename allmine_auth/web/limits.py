"""The API's rate limiter (flask-limiter): per-route limits only, keyed by the client's address.

The views declare theirs (``limiter.limit``/``shared_limit`` in their ``decorators``); no default or
application-wide limit is set. A 429 is rendered by ``web.error_handlers.rate_limit_response``.
"""

from flask_limiter import Limiter

from allmine_auth.web.netutil import client_ip

limiter = Limiter(key_func=client_ip)
