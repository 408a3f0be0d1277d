from django.urls import path

from . import views

urlpatterns = [
    path("sites/", views.site_list, name="site_list"),
    path("sites/add/", views.site_add, name="site_add"),
    path("sites/<slug:slug>/", views.site_detail, name="site_detail"),
]
