"""Third-party apps wrapped in offload, for the servers and workers of tests/thirdparty."""
