"""The HTTP service: REST under /api/v1 (OpenAPI), log streams, and the Studio (``api.studio``)."""
