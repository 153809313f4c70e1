"""cnnx-contrib: extra cnnx components, registered through entry points (see pyproject.toml)."""
