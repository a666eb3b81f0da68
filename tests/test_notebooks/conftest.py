"""Session fixtures of the notebook tests: one real nbgrader course per assignment.

``generated(id)``: a temporary course with the solutions as source, after
``nbgrader generate_assignment`` (with a gradebook). ``graded(id)``: the same course after
submitting three students and running ``nbgrader autograde`` and ``generate_feedback``:

- alice submits the solution notebook (must get full marks);
- bob submits the blank release (must get 0, and grading must not crash);
- carol submits the solutions with one task replaced by a wrong-on-purpose body (partial).

Times per step are printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tests.test_notebooks import nbtools as nbt

IDS = nbt.assignment_ids()
TIMES: dict[str, dict[str, float]] = {}

#: assignment -> (task, wrong-on-purpose body). Assignments not listed get the fallback below.
WRONG = {
    "01_em": (
        "free_energy",
        """
table = log_joint(X, weights, means, covs)
return float(-np.sum(resp * table))  # wrong on purpose: forgets the entropy of q
""",
    ),
    "02_score": (
        "score_function_grad_loo",
        """
leaves = tuple(p.detach().clone().requires_grad_(True) for p in params)
q = make_q(*leaves)
if z is None:
    with torch.no_grad():
        z = q.sample((num_samples,))
log_q = q.log_prob(z.detach()).reshape(num_samples, -1).sum(dim=1)
values = f(z.detach(), *leaves)
fixed = values.detach()
# wrong on purpose: the baseline includes sample s itself (biased by a factor (S - 1) / S)
surrogate = ((fixed - fixed.mean()) * log_q).mean() + values.mean()
grads = torch.autograd.grad(surrogate, leaves, allow_unused=True)
return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))
""",
    ),
    "03_reparam": (
        "laplace_rsample",
        """
return loc + scale * torch.log(2.0 * u)  # wrong on purpose: the left half of the quantile only
""",
    ),
    # 04_elbo: a task no other task calls (the fallback breaks the first function, which others use)
    "04_elbo": (
        "fit_bbvi",
        """
if estimator not in ("reparam", "score"):
    raise ValueError(f"unknown estimator {estimator!r}")
generator = torch.Generator().manual_seed(seed)
mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
log_sigma = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
optimizer = torch.optim.Adam([mu, log_sigma], lr=lr)
history = []
for _ in range(num_steps):
    eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
    optimizer.zero_grad()
    if estimator == "reparam":
        value = elbo(log_joint, mu, log_sigma, eps)
        (-value).backward()
    else:
        with torch.no_grad():
            value = elbo(log_joint, mu, log_sigma, eps)
        z = mu.detach() + torch.exp(log_sigma.detach()) * eps
        mu.grad, log_sigma.grad = elbo_score_grad(log_joint, mu, log_sigma, z)  # wrong on purpose: Adam minimises, so this descends the ELBO
    optimizer.step()
    history.append(float(value.detach()))
return mu.detach(), log_sigma.detach(), history
""",
    ),
    # 05_vae: a task no other task calls (the fallback breaks the first function, which others use)
    "05_vae": (
        "train_vae",
        """
device = get_device(device)
data = torch.as_tensor(train_x).to(device=device, dtype=torch.float32)
model.to(device)
model.train()
optimizer = torch.optim.Adam(model.parameters(), lr=lr)
generator = torch.Generator(device=device).manual_seed(seed)
with torch.no_grad():
    z_dim = model.encoder(data[:1])[0].shape[1]
history = []
for _ in range(epochs):
    order = torch.randperm(data.shape[0], generator=generator, device=device)
    for start in range(0, data.shape[0], batch_size):
        x = data[order[start : start + batch_size]]
        eps = torch.randn(x.shape[0], z_dim, generator=generator, device=device)
        loss = negative_elbo(x, *model(x, eps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    history.append(loss.item())  # wrong on purpose: the last batch's loss, not the epoch's mean
return history
""",
    ),
}
FALLBACK_BODY = "return None  # wrong on purpose: returns nothing\n"


@dataclass
class Graded:
    course: nbt.Course
    assignment: str
    broken_task: str
    carol_expected: (
        float  # what grade(broken_task, ..., tier="all") gives carol's code in-process
    )
    returncode: int
    log: str


def wrong_submission(
    assignment: str, source: nbformat.NotebookNode
) -> tuple[str, nbformat.NotebookNode]:
    """The solution notebook with one task's solution body replaced by a wrong one."""
    nb = nbformat.reads(nbformat.writes(source), as_version=4)
    if assignment in WRONG:
        task, body = WRONG[assignment]
    else:
        functions = [
            c
            for c in nb.cells
            if nbt.is_solution_code(c) and c.source.startswith("def ")
        ]
        task, body = nbt.nbgrader_meta(functions[0])["grade_id"], FALLBACK_BODY
    for cell in nb.cells:
        if nbt.is_solution_code(cell) and nbt.nbgrader_meta(cell)["grade_id"] == task:
            cell.source = nbt.replace_solution_body(cell.source, body)
    return task, nb


def grade_in_process(nb: nbformat.NotebookNode, task: str) -> float:
    """Points the in-process grader gives ``task`` after running the setup and solution cells."""
    from autograder import grade

    namespace: dict[str, object] = {"__name__": "__carol__"}
    for cell in nb.cells:
        if "setup" in cell.metadata.get("tags", []) or nbt.is_solution_code(cell):
            exec(compile(cell.source, f"<{task}>", "exec"), namespace)
    return grade(task, namespace[task], tier="all", namespace=namespace, quiet=True)


def _times(assignment: str) -> dict[str, float]:
    return TIMES.setdefault(assignment, {})


@pytest.fixture(scope="session", params=IDS)
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> nbt.Course:
    assignment = request.param
    course = nbt.Course.create(
        tmp_path_factory.mktemp(f"course-{assignment}"), [assignment]
    )
    done = course.run("generate_assignment", assignment, "--force")
    _times(assignment)["generate_assignment"] = course.seconds[assignment][
        "generate_assignment"
    ]
    assert done.returncode == 0, done.stdout + done.stderr
    assert course.release(assignment).exists()
    return course


@pytest.fixture(scope="session")
def graded(generated: nbt.Course) -> Iterator[Graded]:
    course = generated
    (assignment,) = course.ids
    source = nbt.read(nbt.source_path(assignment))
    task, carol = wrong_submission(assignment, source)
    course.submit("alice", assignment, source)
    course.submit("bob", assignment, nbt.read(course.release(assignment)))
    course.submit("carol", assignment, carol)

    returncode, lines = nbt.nbgrader_stamped(
        course.root, "autograde", assignment, "--force"
    )
    for student, seconds in nbt.seconds_per_student(lines, assignment).items():
        _times(assignment)[f"autograde {student}"] = seconds
    feedback = course.run("generate_feedback", assignment, "--force")
    _times(assignment)["generate_feedback"] = course.seconds[assignment][
        "generate_feedback"
    ]
    assert feedback.returncode == 0, feedback.stdout + feedback.stderr
    expected = grade_in_process(carol, task)
    log = "\n".join(line for _, line in lines)
    yield Graded(course, assignment, task, expected, returncode, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand this process's timings to the terminal summary (``tests/conftest.py``), which
    prints them once, from pytest-xdist's workers too."""
    folder = os.environ.get("COURSE_TEST_TIMES_DIR")
    if folder and TIMES:
        worker = getattr(session.config, "workerinput", {}).get("workerid", "main")
        (Path(folder) / f"notebooks-{worker}.json").write_text(json.dumps(TIMES))
