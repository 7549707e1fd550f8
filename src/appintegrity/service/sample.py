# ruff: noqa: E501
"""The built-in sample configuration (`serve --init-sample` writes it; config/sample.toml is a copy)."""

SAMPLE_CONFIG = """\
# appintegrity sample configuration: `make serve` starts the service with it.
# Every key can be overridden by an environment variable APPINTEGRITY_<SECTION>__<KEY>,
# e.g. APPINTEGRITY_SERVER__PORT=9000, APPINTEGRITY_SERVER__STORE=postgresql://…
# Relative paths resolve against this file's directory. Reference: docs/service.md.

[server]
host = "127.0.0.1"
port = 8080
store = "sqlite:///appintegrity.db"      # postgresql://… (with cache = "redis://…") to scale out
issuer = "http://127.0.0.1:8080"         # the `iss` of app tokens: your service's public URL
# admin_key = "…"                        # enables /v1/admin/* (Authorization: Bearer …); 16+ chars
mode = "enforce"                         # "monitor": blocked devices are logged, still get a token
max_body_bytes = 65536
challenge_ttl_seconds = 300
# max_debug_tokens_per_app = 20          # debug tokens (simulators, CI) per app, like App Check

[tokens]
ttl_seconds = 3600                       # app token lifetime (per app: ttl_seconds in [[apps]])
key_refresh_seconds = 5                  # how often each instance reloads signing keys
# key_publish_seconds = 70               # a rotated key is published this long before it signs

[limits]                                 # requests per minute; 0 = off
challenges_per_minute_per_ip = 120
verifications_per_minute_per_ip = 120
verifications_per_minute_per_key = 60

[[apps]]
id = "ABCDE12345.com.example.app"        # iOS: TEAMID.bundleId
platform = "ios"
environment = "production"               # or "development" (Xcode builds)
# trust_roots = ["test-root.pem"]        # test CAs only: replaces Apple's App Attestation root
# Receipts and fraud risk (docs/service.md, "Receipts and fraud risk"):
# receipt_trust_roots = ["receipt-root.pem"]  # test CAs only: replaces Apple Root CA - G3
# require_valid_receipt = false          # true: a receipt that does not validate is 401
# max_risk_metric = 20                   # above it, assertions are decided by risk_action
# risk_action = "limit"                  # or "block" (403 decision.blocked)
#
# [apps.receipt_refresh]                 # refresh receipts with Apple to learn the risk metric
# team_id = "ABCDE12345"
# devicecheck_key_id = "KEY1234567"
# devicecheck_private_key_file = "AuthKey_KEY1234567.p8"
# interval_hours = 24                    # refresh receipts older than this
# background = true                      # false: only `appintegrity receipts refresh` (cron)

[[apps]]
id = "com.example.app"                   # Android: package name
platform = "android"
# SAMPLE TEST KEYS, generated once for this file and public: replace them with your app's
# Play Console response keys (or use service_account_file = "…" for Google's decode API).
decryption_key = "dCXwS0yhDPGxOKCrKTIgskAo+D+vQP2J38+ZNUTjLLI="
verification_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEDYfzOdL3qO8DiV0Y0PAhfFISbU+dOLHC9oBQ59zKvtXJbW51jpWjuPjZXM/JKLOcgR1lemIxxg+gCZIZRqucow=="
certificate_digests = ["IybpCTPUkM4wTiRPCqkCx2Ock6Ml3_pdpkdSYDb4L2w"]   # sample: your signing cert's SHA-256
# The Play Integrity policy (docs/service.md), for example:
# min_version_code = 42                  # older builds: google.version_too_old (default: any)
# required_device_level = "device"       # "basic", "device" or "strong"
# require_license = true
# When the app reports a Play Integrity client error instead of a token ("errorCode"):
# client_error_action = "block"          # or "limit" (a limited token, with a remediation hint)
# retryable_client_error_action = "block"  # for retryable codes (-3, -8, -12, …) only
"""
