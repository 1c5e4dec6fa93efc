"""Workers do: the Celery app, thin tasks, and the stages that touch the outside world."""
