"""The registry: every graded task, its assignment and its points.

Properties live in ``autograder.checks.<module>`` (public) and ``autograder.hidden.<module>``
(hidden); their points add up to the task's points (``tests/test_autograder/test_registry.py``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from autograder.core import Property, registered

__all__ = ["ASSIGNMENTS", "TASKS", "Task", "hidden_available", "properties", "tasks_of"]

#: nbgrader assignment id -> the module suffix of its checks and reference.
ASSIGNMENTS: dict[str, str] = {
    "01_em": "em",
    "02_score": "score",
    "03_reparam": "reparam",
    "04_elbo": "elbo",
    "05_vae": "vae",
}


@dataclass(frozen=True)
class Task:
    """One graded function or class."""

    id: str
    assignment: str
    points: float

    @property
    def module(self) -> str:
        """The module suffix shared by the reference and the checks."""
        return ASSIGNMENTS[self.assignment]


_POINTS: dict[str, dict[str, float]] = {
    "01_em": {"log_joint": 3, "e_step": 5, "free_energy": 4},
    "02_score": {
        "gaussian_score": 3,
        "score_function_grad": 6,
        "score_function_grad_loo": 4,
    },
    "03_reparam": {
        "gaussian_rsample": 2,
        "exponential_rsample": 2,
        "gumbel_rsample": 2,
        "cauchy_rsample": 2,
        "laplace_rsample": 2,
        "lognormal_rsample": 2,
        "gamma_rsample": 3,
        "student_t_rsample": 3,
        "reparam_grad": 4,
    },
    "04_elbo": {
        "gaussian_entropy": 2,
        "elbo": 4,
        "elbo_entropy_form": 3,
        "elbo_score_grad": 4,
        "fit_bbvi": 5,
        "fullcov_rsample": 3,
        "fullcov_entropy": 2,
        "mixture_log_prob": 5,
    },
    "05_vae": {
        "reparameterize": 2,
        "gaussian_kl": 3,
        "bernoulli_log_likelihood": 3,
        "negative_elbo": 2,
        "Encoder": 2,
        "Decoder": 2,
        "VAE": 3,
        "train_vae": 5,
        "iwae_bound": 4,
    },
}

TASKS: dict[str, Task] = {
    task_id: Task(task_id, assignment, float(points))
    for assignment, table in _POINTS.items()
    for task_id, points in table.items()
}


def tasks_of(assignment: str) -> list[Task]:
    """Tasks of one assignment, in notebook order."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(
            f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}"
        )
    return [task for task in TASKS.values() if task.assignment == assignment]


def hidden_available() -> bool:
    """True on the instructor's side, where the hidden checks are installed."""
    try:
        importlib.import_module("autograder.hidden")
    except ModuleNotFoundError:
        return False
    return True


def properties(
    task_id: str, tiers: tuple[str, ...] = ("public", "hidden")
) -> list[Property]:
    """The properties of ``task_id`` in the given tiers, importing their modules on demand."""
    if task_id not in TASKS:
        raise KeyError(f"unknown task {task_id!r}")
    module = TASKS[task_id].module
    importlib.import_module(f"autograder.checks.{module}")
    if "hidden" in tiers and hidden_available():
        importlib.import_module(f"autograder.hidden.{module}")
    return [p for p in registered(task_id) if p.tier in tiers]
