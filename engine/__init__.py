"""The engine wing: what runs vLLM, inside it, or in its place. The lowest layer: it
imports no other package of this project.

- :mod:`engine.vllm_plugin`: a vLLM general plugin that runs inside vLLM's own processes,
  loaded by vLLM through its entry point; nothing of ours imports it.
- :mod:`engine.launcher`: runs vLLM's OpenAI server as a supervised child process.
- :mod:`engine.fake`: the deterministic fake of vLLM's server that tests and the load-test
  bench use (``python -m engine.fake``).
"""
