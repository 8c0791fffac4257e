"""Real third-party apps behind offload, compared byte for byte with the bare apps."""
