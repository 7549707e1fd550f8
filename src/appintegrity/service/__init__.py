"""The integrity service: ``create_app(load_config(path))`` is the ASGI app ``serve`` runs."""

from appintegrity.service.app import create_app
from appintegrity.service.config import ServiceConfig, load_config, parse_config

__all__ = ["ServiceConfig", "create_app", "load_config", "parse_config"]
