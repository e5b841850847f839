"""Names of the batch entries vdtrain's collator adds for the loss; they never reach the model's forward."""

END_OF_TURN_MASK = "end_of_turn_mask"  # (B, L) bool: tokens that close an assistant turn (selective EOS, EOS floor)
HAS_IMAGE = "has_image"  # (B,) bool: rows whose sample has an image (text-only rows keep d = 0)
# (B,) long: how many leading entries of the last dim of each row's pixel tensor are coordinates, not pixels
# (Kosmos-2.5's flattened patches: row and column index), which the noise leaves as they are; absent when none are
COORDINATE_CHANNELS = "vd_coordinate_channels"
LOSS_ONLY_KEYS = (END_OF_TURN_MASK, HAS_IMAGE, COORDINATE_CHANNELS)
