"""trainlab: a Lightning + Hydra template for choosing lr, batch size and optimizer."""
