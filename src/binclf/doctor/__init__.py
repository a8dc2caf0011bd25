"""The doctor: diagnoses a user's PyTorch model, loss and batch for the classic binary-classification bugs.

``findings`` (Finding, Diagnosis), ``probes`` (running the model and loss, observing them),
``checks`` (observations -> findings), ``run`` (:func:`check` over a batch; :func:`run`, what
``binclf doctor`` calls: load the model, read the table, check).
"""

from binclf.doctor.findings import FINDING_CODES, Diagnosis, Finding, Report, Severity
from binclf.doctor.run import check, load_object, run

__all__ = ["FINDING_CODES", "Diagnosis", "Finding", "Report", "Severity", "check", "load_object", "run"]
