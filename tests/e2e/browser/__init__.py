"""Browser tests: a package, so their package-scoped fixtures (Chromium, the second server) end with them."""
