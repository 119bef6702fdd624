"""WebSocket routes. Each consumer checks the user's role before it subscribes."""

from django.urls import path

from deployments.consumers import DeploymentLogConsumer
from portal.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/deployments/<int:pk>/logs/", DeploymentLogConsumer.as_asgi()),
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
]
