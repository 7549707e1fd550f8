"""Software devices and throwaway CAs for testing a backend without a phone (public API).

Import from the submodules: ``appintegrity.testing.ios`` (a software iPhone),
``appintegrity.testing.receipts`` (App Attest receipts under a test CA),
``appintegrity.testing.android`` (a software Android device making Play Integrity tokens),
``appintegrity.testing.fake_google`` (Google's decode and OAuth endpoints, over real HTTP),
``appintegrity.testing.fake_apple`` (Apple's receipt-refresh endpoint, over real HTTP),
``appintegrity.testing.jwks`` (a JWKS endpoint whose keys and outages a test controls),
``appintegrity.testing.client`` (``IntegrityClient``: the devices' HTTP calls to a running
integrity service — challenge, registration, assertion, debug exchange, token verify — so a
backend's tests get genuine app tokens and assert refusals by their ``ServiceRefusal.code``;
see docs/clients.md, "Testing your backend without a phone").
"""
