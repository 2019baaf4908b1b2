from recbole_mm.trainer.trainer import MMTrainer

__all__ = ["MMTrainer"]
