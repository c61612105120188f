"""The web layer: routes, schemas, the envelope, the JWT loaders (HTTP in, HTTP out)."""
