"""The few-batch run most tests train: what `debug=limit` does, but as a normal run (a debug
mode is recorded `debug`, with no objective, and lands in outputs/debug/)."""

QUICK = (
    "max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
)
