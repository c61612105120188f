"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Defaults to the production settings; an unsafe setting stops the start-up
with a one-line reason instead of a traceback, and exit status 3, which
gunicorn reads as "worker failed to boot": it stops instead of restarting
the worker forever. (``gunicorn.conf.py`` checks the settings even before
the first worker starts.)
"""

import os
import sys

from config import ConfigError

WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR

os.environ.setdefault("APP_ENV", "production")

try:
    from allmine_auth import create_app

    app = create_app(migrations=False)
except ConfigError as error:
    print(f"allmine_auth: refusing to start: {error}", file=sys.stderr)
    sys.exit(WORKER_BOOT_ERROR)
