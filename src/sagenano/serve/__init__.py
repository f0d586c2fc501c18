"""`sage-nano serve`: the REST API and web page over the engine and its interactions (see `api.py`)."""

from .api import ServerSettings, create_app, default_store_path

__all__ = ["ServerSettings", "create_app", "default_store_path"]
