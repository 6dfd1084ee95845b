"""The arq worker process (`tollgate worker`).

It runs the background work that must not sit on a request: the usage-ledger drain, budget
alerts, tool webhook calls, embeddings and Stripe billing. Jobs are thin functions in
`workers/jobs/<domain>.py` that call `api.<domain>.service`; the first of them arrives with the
usage ledger, together with the `tollgate worker` command.
"""
