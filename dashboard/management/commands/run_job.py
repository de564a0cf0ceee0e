"""Run a queued message job in the foreground, as a worker would (for runbooks and tests)."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dashboard.jobs import engine as jobs
from dashboard.jobs import service as jobservice
from dashboard.live import push as live
from dashboard.models import Job


class Command(BaseCommand):
    help = "Run one queued job (by its id) here instead of in a Celery worker; prints its outcome."

    def add_arguments(self, parser):
        parser.add_argument("job_id")

    def handle(self, *args, job_id, **options):
        try:
            job = Job.objects.filter(public_id=job_id).first()
        except ValidationError:
            job = None
        if job is None:
            raise CommandError(f"no job {job_id!r}")
        if job.state != Job.QUEUED:
            raise CommandError(f"job {job_id} is {job.state}; resume it first")
        job = jobs.run(
            job.pk, jobservice.transfer_for, jobservice.router, on_progress=live.job_progress
        )
        self.stdout.write(
            f"{job.state}: {job.done} of {job.total} taken, {job.replayed} delivered, {job.kept} kept, "
            f"{job.failed} failed, {job.duplicates} sent twice"
        )
