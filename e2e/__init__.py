"""End-to-end tests: the real `portal serve` in a subprocess, driven by Chromium through Playwright."""
