from django.urls import path

from environments import views

urlpatterns = [
    path(
        "apps/<slug:slug>/envs/<slug:env_slug>/break-glass/",
        views.freeze_override_new,
        name="freeze-override-new",
    ),
    path(
        "break-glass/<int:pk>/decide/", views.freeze_override_decide, name="freeze-override-decide"
    ),
]
