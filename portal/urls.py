from django.contrib import admin
from django.urls import include, path

from portal import audit_views, catalog_views, dashboard, metrics, mfa_views, sso, views

# The admin signs in through Gantry's own view: the same throttle, the same second factor.
admin.site.login = views.admin_sign_in

urlpatterns = [
    path("", dashboard.dashboard, name="home"),
    path("dashboard/cards/<int:environment_id>/", dashboard.dashboard_card, name="dashboard-card"),
    # The catalog; "home" (/) is the dashboard.
    path("apps/", catalog_views.home, name="catalog"),
    path("apps/<slug:slug>/", catalog_views.application_detail, name="application-detail"),
    path("apps/<slug:slug>/costs/", catalog_views.application_costs, name="application-costs"),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/",
        catalog_views.environment_detail,
        name="environment-detail",
    ),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/drift/check/",
        catalog_views.environment_drift_check,
        name="environment-drift-check",
    ),
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/rollback/",
        catalog_views.environment_rollback,
        name="environment-rollback",
    ),
    path("", include("environments.urls")),
    path("", include("deployments.urls")),
    path("login/", views.SignInView.as_view(), name="login"),
    path("login/sso/", sso.sso_start, name="sso-login"),
    path("login/sso/callback/", sso.sso_callback, name="sso-callback"),
    path("login/sso/step-up/", sso.sso_step_up, name="sso-step-up"),
    path("login/verify/", mfa_views.verify, name="mfa-verify"),
    path("account/mfa/", mfa_views.setup, name="mfa-setup"),
    path("account/mfa/recovery-codes/", mfa_views.new_recovery_codes, name="mfa-recovery-codes"),
    path("logout/", views.sign_out, name="logout"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="token-revoke"),
    path("health/live", views.health_live, name="health-live"),
    path("health/ready", views.health_ready, name="health-ready"),
    path("metrics", metrics.MetricsView.as_view(), name="metrics"),
    path("audit/", audit_views.audit_list, name="audit"),
    path("audit/export.csv", audit_views.export_csv, name="audit-export-csv"),
    path("audit/export.json", audit_views.export_json, name="audit-export-json"),
    path("api/v1/", include("portal.api_urls")),
    path("admin/", admin.site.urls),
]

# Pages for people, JSON under /api/ (portal/api_errors.py). The 500 shows the
# request id, so a user can quote it when reporting the error.
handler400 = "portal.views.bad_request"
handler403 = "portal.views.permission_denied"
handler404 = "portal.views.page_not_found"
handler500 = "portal.views.server_error"
