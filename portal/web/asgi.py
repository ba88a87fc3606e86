"""The ASGI entry point each server process imports: the app built from the environment's settings."""

from portal.app import create_app
from portal.settings import Settings

app = create_app(Settings.from_env())
