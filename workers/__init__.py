"""The arq worker process (`tollgate worker`, settings in `workers/settings.py`).

It runs the background work that must not sit on a request: the usage-ledger drain (a
long-running task started with the worker), the budget-alert resend sweep, and later tool
webhook calls, embeddings and Stripe billing. Jobs are thin functions in `workers/jobs/` that
call `api.<domain>.service`; the embedded default runs the same functions in-process.
"""
