"""Job functions: read the database, call the ML, write results. Celery tasks and the
embedded in-process runner both call these, by the task names in app/jobs.py."""
