"""The back office for finance staff: sign-in (auth.py), the session and role check of every route
(session.py), and the pages (pages.py)."""
