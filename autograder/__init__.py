"""DSC190 autograder: property checks for every task, for notebooks and for the CI grader."""

from autograder.core import CheckResult, Failure, Property, check, expect, run_property
from autograder.grade import format_report, grade, run_task
from autograder.subject import LocalSubject, StudentError, Subject

__all__ = [
    "CheckResult",
    "Failure",
    "LocalSubject",
    "Property",
    "StudentError",
    "Subject",
    "check",
    "expect",
    "format_report",
    "grade",
    "run_property",
    "run_task",
]
