"""The training stage: the ``LightningDataModule`` of paired subjects (:mod:`.data`) and the
``LightningModule`` with its CLI (:mod:`.module`)."""

from monai_t1t2.training.data import PairedDataModule, split_subjects
from monai_t1t2.training.module import TranslationModule

__all__ = ["PairedDataModule", "TranslationModule", "split_subjects"]
