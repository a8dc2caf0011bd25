"""The doctor: diagnoses a user's PyTorch model, loss and batch for the classic binary-classification bugs."""

from binclf.doctor.run import FINDING_CODES, Finding, Report, Severity, check, load_object, run

__all__ = ["FINDING_CODES", "Finding", "Report", "Severity", "check", "load_object", "run"]
