"""The deployment's settings check, beside ``wsgi.py`` and ``gunicorn.conf.py``: ``python config.py``.

Every setting, its default and the checks live in the package, ``allmine_auth/config.py`` (the
README's "Configuration" table). This file reads them from the environment as a worker will
(``APP_ENV``, default ``production``) and refuses unsafe ones with the worker's one-line reason,
before anything starts: gunicorn calls it before the first worker (``on_starting``), and a deployer
can run it in the deployment's environment first. It is not installed (``setup.cfg``): a module
named ``config`` in site-packages would shadow any other of that name; run it from the checkout.
"""

import os
import sys

from allmine_auth.config import ConfigError, config_for, settings_for


def refuse_unsafe_settings():
    """Exit with ``allmine_auth: refusing to start: <reason>`` unless ``APP_ENV``'s settings are safe.

    Returns the ``APP_ENV`` checked.
    """
    app_env = os.environ.get("APP_ENV", "production")
    try:
        settings_for(config_for(app_env))
    except ConfigError as error:
        sys.exit(f"allmine_auth: refusing to start: {error}")
    return app_env


if __name__ == "__main__":
    print(f"allmine_auth: the {refuse_unsafe_settings()} settings are safe to start with")
