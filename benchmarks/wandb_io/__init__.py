"""Everything W&B, one package: `log` (a run per trial, written inside the trial), `reader` (offline runs
read back), `summary` (the report's summary run) and `dashboard` (the sweep's workspace and report).
wandb itself is imported where it is used, so importing this package stays light."""
