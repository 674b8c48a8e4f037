"""The demo wing: what exists only for `make demo` (nothing else imports it).

``demo/trained/<request type>/`` holds the three demo adapters, trained here on the CPU
and committed (bf16 PEFT safetensors, each with its manifest and evaluation report), so
that a fresh clone answers every request type within minutes instead of training for
most of an hour first. :mod:`demo.adapters` checks them against the base model and
retrains them on request (`lora-gateway demo train`).
"""
