"""gaitid's top package: the shared contract (`gaitid.contract`) and the CLI that composes the parts
(`gaitid.cli`). The parts themselves are `service/` (HTTP + clip pipeline, no torch), `gallery/`
(subjects and search, knows nothing of the rest) and `model/` (training and export tooling)."""
