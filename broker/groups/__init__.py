"""The classic consumer-group protocol: membership in memory, generations and offsets in storage."""
