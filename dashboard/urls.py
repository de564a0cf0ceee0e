from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.kinds.kafka.views import messages as kafka_messages
from dashboard.kinds.kafka.views import offsets as kafka_offsets
from dashboard.kinds.kafka.views import tail as kafka_tail
from dashboard.kinds.nats.views import deadletters as nats_deadletters
from dashboard.kinds.nats.views import messages as nats_messages
from dashboard.kinds.nats.views import server as nats_server
from dashboard.views import api, deadletters, jobs, messages, pages

# /brokers/<name>/
broker_urls = [
    path("", pages.broker_detail, name="broker-detail"),
    path("exchanges/", pages.exchanges, name="exchanges"),
    # The key is one URL-encoded segment ("%2F%2Forders"), decoded by Django.
    path("d/<path:key>", pages.destination_detail, name="destination-detail"),
    path("messages/<path:key>", messages.browse, name="messages"),
    path("body/<path:key>", messages.body, name="message-body"),
    path("publish/", messages.publish, name="publish"),
    path("dead-letters/", deadletters.index, name="deadletters"),
    path("dead-letters/scan", deadletters.scan, name="deadletters-scan"),
    path("dead-letters/act", deadletters.act, name="deadletters-act"),
    path("dead-letters/edit", deadletters.edit, name="deadletters-edit"),
    path("dead-letters/headers", deadletters.check_headers, name="deadletters-headers"),
    # Kafka: topics' messages, live tail, consumer-group offsets.
    *kafka_messages.urlpatterns,
    *kafka_tail.urlpatterns,
    *kafka_offsets.urlpatterns,
    # NATS: server details, subjects and streams' messages, JetStream dead letters.
    *nats_server.urlpatterns,
    *nats_messages.urlpatterns,
    *nats_deadletters.urlpatterns,
]

# /jobs/
job_urls = [
    path("", jobs.job_list, name="jobs"),
    path("<str:job_id>/", jobs.job_detail, name="job-detail"),
    path("<str:job_id>/<str:verb>", jobs.job_control, name="job-control"),
]

# /api/v1/
api_urls = [
    path("brokers", api.brokers, name="api-brokers"),
    path("brokers/<str:name>/destinations", api.broker_destinations, name="api-destinations"),
    path(
        "brokers/<str:name>/destinations/<path:key>/history",
        api.destination_history,
        name="api-history",
    ),
    path("brokers/<str:name>/destinations/<path:key>", api.destination, name="api-destination"),
    path("brokers/<str:name>/publish", messages.api_publish, name="api-publish"),
    path("brokers/<str:name>/routes", messages.api_routes, name="api-routes"),
    path("brokers/<str:name>/", include(kafka_messages.api_urlpatterns)),
    path("brokers/<str:name>/", include(kafka_tail.api_urlpatterns)),
    path("brokers/<str:name>/", include(kafka_offsets.api_urlpatterns)),
    path("brokers/<str:name>/", include(nats_server.api_urlpatterns)),
    path("brokers/<str:name>/", include(nats_messages.api_urlpatterns)),
    path("brokers/<str:name>/", include(nats_deadletters.api_urlpatterns)),
    path("jobs", jobs.api_jobs, name="api-jobs"),
    path("jobs/<str:job_id>", jobs.api_job, name="api-job"),
    path("jobs/<str:job_id>/<str:verb>", jobs.api_job_control, name="api-job-control"),
]

dashboard_urls = [
    path("", pages.overview, name="overview"),
    path("brokers/<str:name>/", include(broker_urls)),
    path("jobs/", include(job_urls)),
    path("searches/", include(kafka_messages.search_urlpatterns)),
    path("audit/", pages.audit_log, name="audit"),
    path("audit/export.csv", pages.audit_export, name="audit-export"),
    path("api/v1/", include(api_urls)),
]

urlpatterns = [
    path("", include((dashboard_urls, "dashboard"))),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", pages.healthz, name="healthz"),
]
