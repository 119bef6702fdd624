# Gantry: one image for the web server, the RQ workers and the migrate job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid so that secret files on the host can be given to it (chown 10001),
# and Kubernetes can check it is not root (deploy/kubernetes runs it as 10001).
# HOME outside /app: with a read-only root filesystem it is a writable volume
# there, for the tools deployment steps run (terraform, ansible, git).
RUN groupadd --system --gid 10001 gantry \
    && useradd --system --uid 10001 --gid gantry --home-dir /home/gantry --create-home \
        --shell /usr/sbin/nologin gantry

WORKDIR /app
# Pinned dependencies first: this layer is rebuilt only when a pin changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected (hashed and compressed) at build time; WhiteNoise
# serves them. The key below exists only for this build step.
RUN DEBUG=0 SECRET_KEY=collectstatic-only AUDIT_KEY=collectstatic-only \
        python manage.py collectstatic --noinput -v 0 \
    && mkdir -p /app/var \
    && chown gantry:gantry /app/var

# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=5)"]

# --no-proxy-headers: X-Forwarded-* reach Django untouched and are trusted
# only with BEHIND_PROXY=1 (portal/settings.py). --lifespan off: Django has no
# lifespan handler. Open dashboards never close their sockets, so a shutdown
# waits 5 s for them (inside Docker's 10 s before SIGKILL); pages reconnect.
# --ws-per-message-deflate false: browsers ask for it on every socket, and it
# would compress each frame once per socket (a log batch for each of its
# viewers, a change for each of a thousand dashboards): two to three times
# the server's CPU per log burst and twice its memory per socket, to save
# bytes that are few (docs/PERFORMANCE.md, "Browsers ask for compression").
CMD ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers", "--lifespan", "off", \
     "--timeout-graceful-shutdown", "5", "--ws-per-message-deflate", "false", \
     "portal.asgi:application"]
