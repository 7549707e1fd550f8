from __future__ import annotations

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("health", views.health),
    path("purchases", views.purchase),
    path("premium", views.premium),
    path("redeem", views.redeem),
    path("metrics", views.metrics),
]
