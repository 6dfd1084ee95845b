"""The tenant dashboard at `/dashboard` (SPEC §5.13): server-rendered pages over the API's own
operations, for a tenant signed in with its master key."""
