"""Fake upstream registries for tests: real aiohttp apps on 127.0.0.1, never mocks."""
