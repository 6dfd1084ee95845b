"""Domain-free helpers: time, ids, secrets, pagination."""
