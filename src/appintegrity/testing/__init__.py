"""Software devices and throwaway CAs for testing a backend without a phone (public API).

Import from the submodules: ``appintegrity.testing.ios`` (a software iPhone),
``appintegrity.testing.receipts`` (App Attest receipts under a test CA),
``appintegrity.testing.android`` (a software Android device making Play Integrity tokens),
``appintegrity.testing.fake_google`` (Google's decode and OAuth endpoints, over real HTTP).
"""
