"""Settings for the portal served by tests in a process of its own (uvicorn):
production's settings (DEBUG off, the JSON error handlers), except that static
files come from the finders, so no collectstatic is needed first."""

from portal.settings import *  # noqa: F403

STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
