"""The demo route table (demo/routes.yaml) agrees with what the demo adapters are trained on."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from demo import ROUTES_FILE
from demo.synthetic import ANSWER_SCHEMAS, SYSTEM_PROMPTS, TASKS, WORKING_FIELDS, generate
from router.routes import RouteTable


def test_demo_routes_match_training_data() -> None:
    table = RouteTable.load(ROUTES_FILE)
    assert set(table.routes) == set(TASKS)
    for task in TASKS:
        route = table.routes[task]
        assert route.json_schema == ANSWER_SCHEMAS[task]
        assert route.system_prompt == SYSTEM_PROMPTS[task]
        assert route.adapter is not None and route.adapter.endswith("@prod")
        assert route.defaults["temperature"] == 0
        assert tuple(route.working_fields) == WORKING_FIELDS[task]
        validator = Draft202012Validator(route.json_schema)
        for example in generate(task, 20, seed=3, split="test"):
            # What the adapter is trained to write passes the route's schema, and what the
            # gateway then returns (the working fields removed) is the ground truth.
            written = json.loads(example["messages"][2]["content"])
            assert validator.is_valid(written)
            returned = {k: v for k, v in written.items() if k not in route.working_fields}
            assert returned == example["answer"]
            # The schema lists the properties in the order the model writes them.
            assert list(written) == list(route.json_schema["properties"])
