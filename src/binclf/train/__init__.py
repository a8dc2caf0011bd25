"""Fitting: the trainer, its fast fused/compiled step and AdamW, cross-fitting, and train_table."""
