"""The REST service: a job queue in SQL, the FastAPI app over it, and the workers that run its jobs."""
