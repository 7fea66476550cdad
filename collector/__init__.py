"""traindoc's collector: attach to a PyTorch training loop, write a run folder.

    from traindoc import collector
    run = collector.attach(model, optimizer, root="runs", name="mlp-lr0.1", config=cfg)
    run.log_train(loss, output=logits, target=y)   # each step, no .item() needed
    run.log_val(loss=val_loss, accuracy=val_acc)   # after evaluation
    run.close()
"""

from .run import Run, TrainingStopped, attach

__all__ = ["Run", "TrainingStopped", "attach"]
