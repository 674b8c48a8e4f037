"""Shared by every tier: what the console script composes before any command runs.

The console script (``cli/main.py``) registers the demo wing's logistics generator as
training's dataset source (:mod:`training.sources`) and its SmolLM2 conversion as
training's base model ``demo`` (:mod:`training.base_models`), and hands the demo routes
to the gateway's ``serve --demo`` (:func:`gateway.cli.set_demo_routes`) and to the bench's
gateway (:func:`load_tests.stack.set_routes_file`); the packages below the demo never
import it. Tests are not a package layer, so they do the same here, before collection
(a module may parse a training config with a ``synthetic`` dataset at import).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from demo import ROUTES_FILE
    from demo.base_model import register as register_base_model
    from demo.synthetic import register
    from gateway.cli import set_demo_routes
    from load_tests.stack import set_routes_file

    register()
    register_base_model()
    set_demo_routes(ROUTES_FILE)
    set_routes_file(ROUTES_FILE)
