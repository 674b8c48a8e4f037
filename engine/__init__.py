"""The engine wing: what runs vLLM, inside it, or in its place. It sits above the server
(``adapters < router < gateway < engine``): of the project it imports only
``adapters.errors``, for the root of its errors; the gateway, router and registry
never import it. Its users are the load tests, the demo wing and the console script.

- :mod:`engine.vllm_plugin`: a vLLM general plugin that runs inside vLLM's own processes,
  loaded by vLLM through its entry point; nothing of ours imports it.
- :mod:`engine.process`: the one supervisor of child processes (own process group, log,
  readiness over HTTP, stop of the whole group) that the launcher, the load-test stack,
  the demo and the scripts use.
- :mod:`engine.launcher`: runs vLLM's OpenAI server as a supervised child process.
- :mod:`engine.fake`: the deterministic fake of vLLM's server that tests and the load-test
  bench use (``python -m engine.fake``).
"""
