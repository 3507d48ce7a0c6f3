from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo site: notices on the home page, a task board kept live across tabs."""

    name = "project"
    label = "demo"
    verbose_name = "Demo"
    default_auto_field = "django.db.models.BigAutoField"

