"""After every browser test of a backend (links opened, sessions, payments through Mollie and Stripe, signed
webhooks, downloads, staff sign-in), the server's log, written at DEBUG, holds none of the secrets it was given or handed out.

Its name puts it after the other modules (staff sign-in included): pytest runs a backend's tests in file order."""

from __future__ import annotations

import re

from e2e.conftest import PortalServer


def test_no_secret_reaches_the_servers_log(portal: PortalServer) -> None:
    log = portal.log_path.read_text(errors="replace")
    assert " DEBUG " in log, "the server logged at DEBUG"
    assert "/webhooks/stripe" in log or "stripe" in log.lower(), "the payment flows ran against this server"
    assert len(portal.secrets) > 8, "the API key, the provider keys and secrets, and the links handed out"
    leaked = [secret for secret in portal.secrets if secret in log]
    assert leaked == [], f"{len(leaked)} secrets in the log"
    # What the test cannot know by value: session cookies, CSRF tokens, webhook signatures.
    for shape in (r"quittance_session=[A-Za-z0-9_\-]{20,}", r"v1=[0-9a-f]{64}", r"whsec_[A-Za-z0-9]{8,}",
                  r"qtc_[A-Za-z0-9_\-]{20,}", r"sk_test_[A-Za-z0-9_]{8,}"):
        assert not re.search(shape, log), shape
