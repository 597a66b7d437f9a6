"""A run small enough for tests: 8x8 digits, 2 members, 1-2 epochs."""

TINY = ["members=2", "train.epochs=2", "data.name=digits", "data.train_size=150", "data.val_size=60",
        "data.test_size=150", "model.channels=[4, 8]", "eager.rule=fixed", "eager.epoch=1",
        "baseline.max_epochs=2", "baseline.width=1.5"]
