"""Training: datasets, QLoRA/LoRA/full/DPO fine-tuning, evaluation, export, the demo base model."""
