"""The load tests' errors: one root under the project's own.

    LoraGatewayError              adapters/errors.py: the root of every error of the project
    └── LoadTestError
        ├── ScenarioError         a scenario that cannot run: bad YAML, a bad field, or a
        │                         missing run-time binding (also ValueError)
        ├── PreflightError        a target cannot run this scenario (also RuntimeError)
        ├── PromptError           the prompt source cannot give prompts for a task
        │                         (also RuntimeError)
        ├── StackError            a part of the bench stack could not be started or
        │                         prepared (also RuntimeError)
        ├── PeerUnavailable       the LiteLLM peer cannot be measured; its arm is skipped
        │                         (also RuntimeError)
        └── BenchmarksFileError   BENCHMARKS.md has markers we will not write over
                                  (also ValueError)

Each keeps the built-in base it had before the tree, so code that catches ``ValueError``
or ``RuntimeError`` still catches it. Messages are one line, fit to print as they are.
"""

from __future__ import annotations

from adapters.errors import LoraGatewayError


class LoadTestError(LoraGatewayError):
    """Root of the load tests' errors: a run that cannot start or go on, and why."""
