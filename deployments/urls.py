from django.urls import path

from deployments import views

urlpatterns = [
    path("apps/<slug:slug>/releases/", views.release_list, name="release-list"),
    path("apps/<slug:slug>/releases/new/", views.release_new, name="release-new"),
    path("releases/<int:pk>/", views.release_detail, name="release-detail"),
    path("approvals/", views.approvals_inbox, name="approvals-inbox"),
    path("approvals/count/", views.approvals_count, name="approvals-count"),
    path("deployments/", views.deployment_list, name="deployment-list"),
    path("deployments/new/", views.deployment_new, name="deployment-new"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/steps/", views.deployment_steps, name="deployment-steps"),
    path(
        "deployments/<int:pk>/steps/<int:step_pk>/force-unlock/",
        views.step_force_unlock,
        name="step-force-unlock",
    ),
    path("deployments/<int:pk>/approve/", views.deployment_approve, name="deployment-approve"),
    path(
        "deployments/<int:pk>/emergency-review/",
        views.deployment_emergency_review,
        name="deployment-emergency-review",
    ),
    path(
        "deployments/<int:pk>/policy-override/",
        views.deployment_policy_override,
        name="deployment-policy-override",
    ),
    path("deployments/<int:pk>/reject/", views.deployment_reject, name="deployment-reject"),
    path("deployments/<int:pk>/cancel/", views.deployment_cancel, name="deployment-cancel"),
    path(
        "deployments/<int:pk>/evidence.json",
        views.deployment_evidence_json,
        name="deployment-evidence-json",
    ),
    path(
        "deployments/<int:pk>/evidence.html",
        views.deployment_evidence_html,
        name="deployment-evidence-html",
    ),
    path("apps/<slug:slug>/metrics/", views.application_metrics, name="application-metrics"),
]
