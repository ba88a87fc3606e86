"""Local emulators of the Mollie and Stripe APIs (test mode only), for the demo and the tests.

The real, unmodified SDKs talk to them over loopback. Each runs in its own thread with its own event loop:
an emulator served by the app's own loop would deadlock when the app calls it synchronously.
"""
