"""Curation: build the training data a debiasing fine-tune needs, and prove what is in it.

Every builder (counterfactual augmentation, balanced templates, self-generated text, safety
anchors, counterfactual pairs and contexts) produces records in the one format of
:mod:`fairtune.curation.records`; the shared :func:`fairtune.curation.build.finalize`
deduplicates them, checks them against the audit suites, splits them and writes the data card.
"""

from fairtune.curation.build import ContaminationError, CurationResult, GuardSettings, Source, finalize
from fairtune.curation.records import read_records, record_format, record_texts, validate_record

__all__ = ["ContaminationError", "CurationResult", "GuardSettings", "Source", "finalize", "read_records",
           "record_format", "record_texts", "validate_record"]
