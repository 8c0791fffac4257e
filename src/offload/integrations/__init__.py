"""offload on the task queues people already run: RQ (:mod:`.rq`) and Celery (:mod:`.celery`)."""
