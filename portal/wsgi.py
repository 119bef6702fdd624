import os

from django.core.wsgi import get_wsgi_application

from portal.core import collector

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()
collector.tune()  # as portal/asgi.py: the process serves for hours
