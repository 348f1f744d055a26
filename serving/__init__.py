"""The inference server baked into every model image. Imports nothing from `kiln` or `flows`."""
