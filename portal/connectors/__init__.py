"""Upstream systems: the billing system learns what happened here (signed webhook, REST status patch, email),
and invoices come in from systems that only offer an API to read (pull importer). Only this package knows
an upstream system's URLs."""
