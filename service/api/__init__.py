"""The HTTP layer: routes, schemas, problem responses, auth, micro-batching, request logging."""
