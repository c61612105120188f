"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Defaults to the production settings; an unsafe setting stops the start-up
with a one-line reason instead of a traceback.
"""

import os
import sys

from config import ConfigError

os.environ.setdefault("APP_ENV", "production")

try:
    from allmine_auth import create_app

    app = create_app(migrations=False)
except ConfigError as error:
    sys.exit(f"allmine_auth: refusing to start: {error}")
