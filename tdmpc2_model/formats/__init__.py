"""One module per on-disk checkpoint format (the save_pretrained directory, the original's
.pt, Lightning .ckpt, a run's checkpoints) and ONE reader dispatch over them; none needs the
agent."""
