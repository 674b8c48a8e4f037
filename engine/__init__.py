"""Code that runs inside the inference engine's own processes (vLLM plugins), never in the
gateway: nothing in this project imports it; vLLM loads it through its entry points."""
