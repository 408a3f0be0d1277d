from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    """Only here so that `python manage.py simulator` exists; the simulator itself needs no Django."""

    name = "simulator"
    verbose_name = "Moodle simulator"
