"""kiln: ship scikit-learn models as immutable serving images.

The library, by layer (each imports only the ones below it; import-linter checks this):
`kiln.cli` (the `kiln` command) -> `flows` (the Prefect flows) -> `kiln.wiring` (settings in,
collaborators out) -> `kiln.training`, `kiln.images`, `kiln.rollout` -> `kiln.store` ->
`kiln.infra` -> `kiln.config`. `serving` (the server in every image) imports none of them.
"""
