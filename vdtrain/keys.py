"""Names of the batch entries vdtrain's collator adds for the loss; they never reach the model's forward."""

END_OF_TURN_MASK = "end_of_turn_mask"  # (B, L) bool: tokens that close an assistant turn (selective EOS, EOS floor)
HAS_IMAGE = "has_image"  # (B,) bool: rows whose sample has an image (text-only rows keep d = 0)
LOSS_ONLY_KEYS = (END_OF_TURN_MASK, HAS_IMAGE)
