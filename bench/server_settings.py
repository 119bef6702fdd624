"""Settings of the web server the served-pages benchmark starts: production's
(tests/server_settings.py: DEBUG off, the pool, the error handlers) with
static files from the finders, so no collectstatic is needed first."""

from tests.server_settings import *  # noqa: F403
