from django.urls import path

from .views import alerts, errors, health, overview

app_name = "monitoring"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("errors/", errors.errors, name="errors"),
    path("errors/calls/", errors.error_calls, name="error_calls"),
    path("alerts/", alerts.alert_list, name="alert_list"),
    path("alerts/<int:pk>/acknowledge/", alerts.alert_acknowledge, name="alert_acknowledge"),
    path("alerts/mute/", alerts.alert_mute, name="alert_mute"),
    path("alerts/channels/", alerts.channel_list, name="channel_list"),
    path("alerts/channels/<int:pk>/enable/", alerts.channel_enable, name="channel_enable"),
    path("alerts/channels/<int:pk>/test/", alerts.channel_test, name="channel_test"),
]
