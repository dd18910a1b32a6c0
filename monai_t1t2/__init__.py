"""monai-t1t2: translate T1-weighted brain MRI into synthetic T2-weighted MRI.

Public API (imported lazily so ``import monai_t1t2`` stays fast):

- :func:`translate` -- T1 (path, array + affine, or ``MetaTensor``) in, synthetic T2 ``MetaTensor`` out.
- :func:`translate_files` -- files in, ``<stem>_synT2.nii.gz`` + provenance sidecars out (raises on a bad input).
- :func:`run_batch` -- a whole collection (files, folders, globs, datalists) with a manifest, failure
  isolation, resume, QC gate, HTML report and multi-device sharding (``monai-t1t2 predict``).
- :func:`evaluate` -- the scoring protocol of ``EVALUATION.md`` on a prediction and a reference.
- :func:`brain_mask` -- the package's one brain mask (skull-stripped, network or head rule).
- :func:`quality_report` -- MRIQC-style image-quality metrics and a keep / reject decision.
- :func:`read_volume`, :func:`write_volume` -- validated reading, atomic writing.
- :func:`find_subjects`, :func:`split_subjects` -- paired data discovery and subject-level splits.
"""

from importlib import import_module

__version__ = "0.17.0"

_API = {
    "read_volume": "monai_t1t2.io",
    "write_volume": "monai_t1t2.io",
    "find_subjects": "monai_t1t2.io",
    "load_subjects": "monai_t1t2.io",
    "split_subjects": "monai_t1t2.training.data",
    "brain_mask": "monai_t1t2.masks",
    "quality_report": "monai_t1t2.quality",
    "evaluate": "monai_t1t2.metrics",
    "translate": "monai_t1t2.inference.translation",
    "translate_files": "monai_t1t2.inference.batch",
    "run_batch": "monai_t1t2.inference.batch",
    "OutputLocationError": "monai_t1t2.errors",
    "T1T2Error": "monai_t1t2.errors",
    "InvalidVolumeError": "monai_t1t2.errors",
    "GridMismatchError": "monai_t1t2.errors",
    "OutputExistsError": "monai_t1t2.errors",
    "DatasetError": "monai_t1t2.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'monai_t1t2' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
