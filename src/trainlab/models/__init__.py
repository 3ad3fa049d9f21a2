"""LightningModules (loss, metrics, optimizer wiring) and the plain networks they train."""
