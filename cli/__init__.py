"""The ``lora-gateway`` console script: it composes every package's commands, so it sits
above them all (ARCHITECTURE.md) and nothing imports it."""
