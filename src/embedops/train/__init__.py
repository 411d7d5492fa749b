"""Fine-tuning: full or LoRA, with checkpoints, resume and a held-out sanity evaluation."""
