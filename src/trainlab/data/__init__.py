"""LightningDataModules: each owns its data, its split and its batching."""
