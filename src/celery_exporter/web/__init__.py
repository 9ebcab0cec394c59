"""The HTTP side: /metrics, /, /healthz, /readyz, /health; TLS and basic auth from a web config."""
