"""The shipped route table agrees with what the demo adapters are trained on."""

from __future__ import annotations

from jsonschema import Draft202012Validator

from router.routes import RouteTable
from training.synthetic import ANSWER_SCHEMAS, SYSTEM_PROMPTS, TASKS, generate


def test_demo_routes_match_training_data() -> None:
    table = RouteTable.load(None)
    assert set(table.routes) == set(TASKS)
    for task in TASKS:
        route = table.routes[task]
        assert route.json_schema == ANSWER_SCHEMAS[task]
        assert route.system_prompt == SYSTEM_PROMPTS[task]
        assert route.adapter is not None and route.adapter.endswith("@prod")
        assert route.defaults["temperature"] == 0
        validator = Draft202012Validator(route.json_schema)
        for example in generate(task, 20, seed=3, split="test"):
            assert validator.is_valid(example["answer"])
