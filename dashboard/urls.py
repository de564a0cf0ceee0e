from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.kinds import all_kinds
from dashboard.views import (
    api,
    deadletters,
    export,
    imports,
    incidents,
    jobs,
    masking,
    metrics,
    pages,
    publish,
)

# /brokers/<name>/
broker_urls = [
    path("", pages.broker_detail, name="broker-detail"),
    path("d/<path:key>", pages.destination_detail, name="destination-detail"),
    path("publish/", publish.publish, name="publish"),
    path("import/", imports.page, name="import"),
    path("dead-letters/", deadletters.index, name="deadletters"),
    path("dead-letters/scan", deadletters.scan, name="deadletters-scan"),
    path("dead-letters/act", deadletters.act, name="deadletters-act"),
    path("dead-letters/edit", deadletters.edit, name="deadletters-edit"),
    path("dead-letters/export", export.page_export, name="deadletters-export"),
    # Each kind's own pages (dashboard/kinds/<kind>/urls.py).
    *(route for kind in all_kinds() for route in kind.broker_urls()),
]

# /jobs/
job_urls = [
    path("", jobs.job_list, name="jobs"),
    path("<str:job_id>/", jobs.job_detail, name="job-detail"),
    path("<str:job_id>/<str:verb>", jobs.job_control, name="job-control"),
]

# /incidents/
incident_urls = [
    path("", incidents.incident_list, name="incidents"),
    path("<str:incident_id>/", incidents.incident_detail, name="incident-detail"),
    path("<str:incident_id>/ack", incidents.incident_ack, name="incident-ack"),
    path("<str:incident_id>/snooze", incidents.incident_snooze, name="incident-snooze"),
]

# /api/v1/
api_urls = [
    path("incidents", incidents.api_incidents, name="api-incidents"),
    path("incidents/<str:incident_id>", incidents.api_incident, name="api-incident"),
    path("incidents/<str:incident_id>/ack", incidents.api_incident_ack, name="api-incident-ack"),
    path(
        "incidents/<str:incident_id>/snooze",
        incidents.api_incident_snooze,
        name="api-incident-snooze",
    ),
    path("brokers", api.brokers, name="api-brokers"),
    path("brokers/<str:name>/destinations", api.broker_destinations, name="api-destinations"),
    path(
        "brokers/<str:name>/destinations/<path:key>/history",
        api.destination_history,
        name="api-history",
    ),
    path("brokers/<str:name>/destinations/<path:key>", api.destination, name="api-destination"),
    path("brokers/<str:name>/publish", publish.api_publish, name="api-publish"),
    path("brokers/<str:name>/import", imports.api_import, name="api-import"),
    path(
        "brokers/<str:name>/dead-letters/export", export.api_export, name="api-deadletters-export"
    ),
    *(path("brokers/<str:name>/", include(kind.api_urls())) for kind in all_kinds()),
    path("jobs", jobs.api_jobs, name="api-jobs"),
    path("jobs/<str:job_id>", jobs.api_job, name="api-job"),
    path("jobs/<str:job_id>/<str:verb>", jobs.api_job_control, name="api-job-control"),
]

dashboard_urls = [
    path("", pages.overview, name="overview"),
    path("brokers/<str:name>/", include(broker_urls)),
    path("jobs/", include(job_urls)),
    path("incidents/", include(incident_urls)),
    *(route for kind in all_kinds() for route in kind.site_urls()),
    path("audit/", pages.audit_log, name="audit"),
    path("masking/", masking.rules, name="masking"),
    path("masking/raw", masking.raw_values, name="masking-raw"),
    path("audit/export.csv", pages.audit_export, name="audit-export"),
    path("api/v1/", include(api_urls)),
]

urlpatterns = [
    path("", include((dashboard_urls, "dashboard"))),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", pages.healthz, name="healthz"),
    path("readyz", metrics.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
