"""The inference stage: whole volumes through the sliding window (:mod:`.translation`) and files
and collections with sidecars, a manifest, resume, QC gate, report and sharding (:mod:`.batch`)."""

from monai_t1t2.inference.batch import run_batch, run_predict, translate_files, translate_folder
from monai_t1t2.inference.translation import Translator, build_translator, load_translator, translate

__all__ = ["Translator", "build_translator", "load_translator", "run_batch", "run_predict", "translate",
           "translate_files", "translate_folder"]
