"""Root conftest: loads numguard's pytest plugin for every test directory."""

pytest_plugins = ["numguard.pytest_plugin"]
