"""The results store: one JSON per job, validated when read. No torch."""
