from django.urls import path

from environments import views

urlpatterns = [
    # The catalog; "home" (/) is the dashboard (portal/dashboard.py).
    path("apps/", views.home, name="catalog"),
    path("apps/<slug:slug>/", views.application_detail, name="application-detail"),
    path("apps/<slug:slug>/costs/", views.application_costs, name="application-costs"),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/",
        views.environment_detail,
        name="environment-detail",
    ),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/rollback/",
        views.environment_rollback,
        name="environment-rollback",
    ),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/break-glass/",
        views.freeze_override_new,
        name="freeze-override-new",
    ),
    path(
        "break-glass/<int:pk>/decide/", views.freeze_override_decide, name="freeze-override-decide"
    ),
]
