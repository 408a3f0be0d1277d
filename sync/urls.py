from django.urls import path

from . import views

urlpatterns = [
    path("sites/", views.site_list, name="site_list"),
    path("sites/add/", views.site_add, name="site_add"),
    path("sites/<slug:slug>/", views.site_detail, name="site_detail"),
    path("sites/<slug:slug>/run/", views.run_start, name="run_start"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/pause/", views.run_pause, name="run_pause"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("records/", views.record_list, name="record_list"),
    path("records/<int:pk>/", views.record_detail, name="record_detail"),
    path("records/<int:pk>/lookup/", views.record_lookup, name="record_lookup"),
    path("deadletters/", views.deadletter_list, name="deadletter_list"),
    path("deadletters/retry/", views.deadletter_retry_filtered, name="deadletter_retry_filtered"),
    path("deadletters/<int:pk>/retry/", views.deadletter_retry, name="deadletter_retry"),
    path("deadletters/<int:pk>/discard/", views.deadletter_discard, name="deadletter_discard"),
]
