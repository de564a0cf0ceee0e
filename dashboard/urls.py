from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.views import api, pages

# /brokers/<name>/
broker_urls = [
    path("", pages.broker_detail, name="broker-detail"),
    path("exchanges/", pages.exchanges, name="exchanges"),
    # The key is one URL-encoded segment ("%2F%2Forders"), decoded by Django.
    path("d/<path:key>", pages.destination_detail, name="destination-detail"),
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
]

dashboard_urls = [
    path("", pages.overview, name="overview"),
    path("brokers/<str:name>/", include(broker_urls)),
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
