"""The registry: every graded task, its assignment and its points.

Properties live in ``autograder.checks.<module>`` (public) and ``autograder.hidden.<module>``
(hidden); their points add up to the task's points (``tests/test_autograder/test_registry.py``).
A plugin (``autograde grade --plugin MODULE``) adds an assignment with
:func:`register_assignment` and, in its judge-only module, :func:`register_hidden_checks`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autograder.core import Property, registered
from autograder.secrets import HIDDEN_CHECKS, is_secret

__all__ = [
    "ASSIGNMENTS",
    "COURSE_ASSIGNMENTS",
    "PLUGINS_ENV",
    "TASKS",
    "Task",
    "check_modules",
    "hidden_available",
    "load_plugins",
    "properties",
    "register_assignment",
    "register_hidden_checks",
    "tasks_of",
]

#: nbgrader assignment id -> the module suffix of its checks and reference.
ASSIGNMENTS: dict[str, str] = {
    "01_em": "em",
    "02_score": "score",
    "03_reparam": "reparam",
    "04_elbo": "elbo",
    "05_vae": "vae",
}
#: The course's own assignments (``ASSIGNMENTS`` also gains plugins' as they register).
COURSE_ASSIGNMENTS: dict[str, str] = dict(ASSIGNMENTS)


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
        "optimal_baseline": 3,
    },
    "03_reparam": {
        "gaussian_rsample": 2,
        "exponential_rsample": 2,
        "gumbel_rsample": 2,
        "cauchy_rsample": 2,
        "laplace_rsample": 2,
        "lognormal_rsample": 2,
        "gamma_rsample": 3,
        "gamma_implicit_rsample": 5,
        "student_t_rsample": 3,
        "reparam_grad": 4,
    },
    "04_elbo": {
        "gaussian_entropy": 2,
        "elbo": 4,
        "elbo_entropy_form": 3,
        "elbo_score_grad": 4,
        "fit_bbvi": 5,
        "mean_field_sigma": 2,
        "fullcov_rsample": 3,
        "fullcov_entropy": 2,
        "mixture_log_prob": 5,
        "mixture_score_surrogate": 2,
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


#: Where a plugin's checks live, by module suffix: public and hidden (judge-only) modules.
_PLUGIN_CHECKS: dict[str, str] = {}
_PLUGIN_HIDDEN: dict[str, str] = {}
#: More plugins to load, comma-separated (the CI grader reads it besides ``--plugin``).
PLUGINS_ENV = "AUTOGRADER_PLUGINS"


def register_assignment(
    assignment: str, module: str, points: Mapping[str, float], *, checks: str
) -> None:
    """Add a plugin's assignment: its tasks and points, and where its public checks live.

    Args:
        assignment: The nbgrader assignment id (``00_fake``).
        module: Its module suffix (``fake``), unique among assignments.
        points: Task id -> points, in notebook order.
        checks: The module that registers its public properties (the worker imports it).

    Raises:
        ValueError: The id, the suffix or a task id is taken by another assignment.
    """
    owner = {m: a for a, m in ASSIGNMENTS.items()}.get(module, assignment)
    if ASSIGNMENTS.get(assignment, module) != module or owner != assignment:
        raise ValueError(f"assignment {assignment!r} or module {module!r} is taken")
    taken = [t for t in points if t in TASKS and TASKS[t].assignment != assignment]
    if taken:
        raise ValueError(f"tasks {taken} belong to another assignment")
    ASSIGNMENTS[assignment] = module
    for task_id, task_points in points.items():
        TASKS[task_id] = Task(task_id, assignment, float(task_points))
    _PLUGIN_CHECKS[module] = checks


def register_hidden_checks(module: str, checks: str) -> None:
    """Name the judge-only module that holds the hidden properties of plugin ``module``.

    Called by that module itself, so its properties are graded only where it was loaded (a
    judge given it as a plugin).

    Raises:
        ValueError: ``checks`` is not a secret module name (a part named ``hidden``), so a
            worker would be allowed to import it.
    """
    if not is_secret(checks):
        raise ValueError(f"{checks!r} would be public: name hidden checks *.hidden")
    _PLUGIN_HIDDEN[module] = checks


def load_plugins(names: Sequence[str] | None = ()) -> list[str]:
    """Import the plugins ``names`` and those in ``$AUTOGRADER_PLUGINS``; return them, once each."""
    listed = [*(names or []), *os.environ.get(PLUGINS_ENV, "").split(",")]
    unique = list(dict.fromkeys(p for p in listed if p))
    for plugin in unique:
        importlib.import_module(plugin)
    return unique


def hidden_available() -> bool:
    """True on the instructor's side, where the hidden checks are installed."""
    try:
        importlib.import_module(HIDDEN_CHECKS)
    except ModuleNotFoundError:
        return False
    return True


def check_modules(module: str) -> tuple[str, str | None]:
    """The modules that register the properties of assignment ``module``: public, hidden.

    The course's live in ``autograder.checks`` and ``autograder.hidden`` (hidden is None
    where those are not installed, as on a student's machine); a plugin's where it registered
    them (hidden is None until its judge-only module is loaded).
    """
    if module in _PLUGIN_CHECKS:
        return _PLUGIN_CHECKS[module], _PLUGIN_HIDDEN.get(module)
    hidden = f"{HIDDEN_CHECKS}.{module}" if hidden_available() else None
    return f"autograder.checks.{module}", hidden


def properties(
    task_id: str, tiers: tuple[str, ...] = ("public", "hidden")
) -> list[Property]:
    """The properties of ``task_id`` in the given tiers, importing their modules on demand."""
    if task_id not in TASKS:
        raise KeyError(f"unknown task {task_id!r}")
    public, hidden = check_modules(TASKS[task_id].module)
    importlib.import_module(public)
    if "hidden" in tiers and hidden is not None:
        importlib.import_module(hidden)
    return [p for p in registered(task_id) if p.tier in tiers]
