"""The shipped load-test scenarios (YAML files beside this module)."""
