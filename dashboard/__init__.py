"""Sluice's Django project: settings, models, views, live updates and collection tasks."""

from dashboard.celery import app as celery_app

__all__ = ["celery_app"]
