"""Django settings for the Django test modules: one configuration, made once per process."""

from __future__ import annotations

import django
from django.conf import settings


def configure_django(root_urlconf: str) -> None:
    """Configure Django for the test Client (no apps, no database) unless it already is.

    Settings can be configured once per process, so the first test module imported names the
    URLconf here; each test module still names its own with ``override_settings``.
    """
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=root_urlconf,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    django.setup()
