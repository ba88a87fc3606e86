"""Payment providers behind one small interface; only this package imports the vendors' SDKs."""
