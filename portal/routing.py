"""WebSocket routes (consumers arrive with the deploy engine and the dashboard)."""

websocket_urlpatterns: list = []
