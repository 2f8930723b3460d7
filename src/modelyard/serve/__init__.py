"""The REST server (pattern 1): every model of the registry by alias, REST v1 and Open Inference v2."""

from modelyard.serve.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
