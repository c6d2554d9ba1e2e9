"""One module per kernel family; each exposes ``run(device, quick) -> list[Timing]``."""
