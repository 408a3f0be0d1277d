from django.urls import path

from . import views, views_alerts

urlpatterns = [
    path("", views.overview, name="overview"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("errors/", views.errors, name="errors"),
    path("errors/calls/", views.error_calls, name="error_calls"),
    path("alerts/", views_alerts.alert_list, name="alert_list"),
    path("alerts/<int:pk>/acknowledge/", views_alerts.alert_acknowledge, name="alert_acknowledge"),
    path("alerts/mute/", views_alerts.alert_mute, name="alert_mute"),
    path("alerts/channels/", views_alerts.channel_list, name="channel_list"),
    path("alerts/channels/<int:pk>/enable/", views_alerts.channel_enable, name="channel_enable"),
    path("alerts/channels/<int:pk>/test/", views_alerts.channel_test, name="channel_test"),
]
