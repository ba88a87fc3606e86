"""Quittance: a customer invoice and payment portal."""
