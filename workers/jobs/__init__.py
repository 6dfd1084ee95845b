"""arq job functions: thin wrappers that call `api.<domain>.service`."""
