"""Tasks: the LightningModules that say how a network learns from a data set's batches.

`TaskModule` owns what every task shares (the step hooks, epoch metrics summed on the device,
the best-so-far of the objective, the optimizer wiring); `Supervised` fills it in for
multi-class, binary and regression data as the `task` config group describes them
(loss, metrics from torchmetrics, objective); the language model lives beside its network in
`trainlab.models.gpt`. Networks themselves are plain `nn.Module`s in `trainlab.models`.
"""
