"""The JSON API, included at /api/v1/. Names start with `api-` to stay apart
from the pages' URL names."""

from django.urls import path, re_path

from deployments import api as deployments_api
from deployments import drift_api, policy_api
from environments import api as environments_api
from portal import api as portal_api
from portal import catalog_api, views

urlpatterns = [
    path("applications/", environments_api.ApplicationList.as_view(), name="api-application-list"),
    path(
        "environments/<int:pk>/",
        catalog_api.EnvironmentDetail.as_view(),
        name="api-environment-detail",
    ),
    path(
        "environments/<int:pk>/costs/",
        catalog_api.EnvironmentCosts.as_view(),
        name="api-environment-costs",
    ),
    path(
        "environments/<int:pk>/rollback/",
        catalog_api.EnvironmentRollback.as_view(),
        name="api-environment-rollback",
    ),
    path(
        "environments/<int:pk>/alarms/",
        environments_api.EnvironmentAlarms.as_view(),
        name="api-environment-alarms",
    ),
    path(
        "environments/<int:pk>/alarms/history/",
        environments_api.EnvironmentAlarmHistory.as_view(),
        name="api-environment-alarm-history",
    ),
    path("releases/", deployments_api.ReleaseListCreate.as_view(), name="api-release-list"),
    path("releases/<int:pk>/", deployments_api.ReleaseDetail.as_view(), name="api-release-detail"),
    path(
        "deployments/", deployments_api.DeploymentListCreate.as_view(), name="api-deployment-list"
    ),
    path(
        "deployments/<int:pk>/",
        deployments_api.DeploymentDetail.as_view(),
        name="api-deployment-detail",
    ),
    path(
        "deployments/<int:pk>/logs/",
        deployments_api.DeploymentLogs.as_view(),
        name="api-deployment-logs",
    ),
    path(
        "deployments/<int:pk>/approve/",
        deployments_api.DeploymentApprove.as_view(),
        name="api-deployment-approve",
    ),
    path(
        "deployments/<int:pk>/reject/",
        deployments_api.DeploymentReject.as_view(),
        name="api-deployment-reject",
    ),
    path(
        "deployments/<int:pk>/cancel/",
        deployments_api.DeploymentCancel.as_view(),
        name="api-deployment-cancel",
    ),
    path(
        "deployments/<int:pk>/evidence/",
        deployments_api.DeploymentEvidence.as_view(),
        name="api-deployment-evidence",
    ),
    path(
        "cost-estimates/",
        deployments_api.CostEstimateCreate.as_view(),
        name="api-cost-estimate-create",
    ),
    path(
        "environments/<int:pk>/drift/",
        drift_api.EnvironmentDriftDetail.as_view(),
        name="api-environment-drift",
    ),
    path(
        "environments/<int:pk>/drift/check/",
        drift_api.EnvironmentDriftCheck.as_view(),
        name="api-environment-drift-check",
    ),
    path(
        "policy-evaluations/",
        policy_api.PolicyEvaluationCreate.as_view(),
        name="api-policy-evaluation-create",
    ),
    path(
        "deployments/<int:pk>/emergency-review/",
        policy_api.DeploymentEmergencyReview.as_view(),
        name="api-deployment-emergency-review",
    ),
    path(
        "deployments/<int:pk>/policy-override/",
        policy_api.DeploymentPolicyOverride.as_view(),
        name="api-deployment-policy-override",
    ),
    path("audit-events/", portal_api.AuditEventList.as_view(), name="api-audit-event-list"),
    path("schema/", portal_api.SchemaView.as_view(), name="api-schema"),
    path("docs/", portal_api.ApiDocsView.as_view(), name="api-docs"),
    # Last: anything else under /api/v1/ is a JSON 404.
    re_path(r"^(?P<path>.*)$", views.api_endpoint_not_found, name="api-not-found"),
]
