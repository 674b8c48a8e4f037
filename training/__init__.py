"""Training: datasets, QLoRA/LoRA/full/DPO fine-tuning, evaluation, export, and the
registries of dataset sources and base models that the demo wing fills."""
