"""nbgrader settings for the Validate button and ``nbgrader validate`` on a student's machine.

Validate reads this file from the folder JupyterLab (or ``nbgrader validate``) starts in:
start them from the course folder. Validate reruns the whole notebook with small budgets.
"""

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

# Seconds per cell. nbgrader's default (30 s) is too short for the VAE's one short training
# epoch on a slow laptop; a cell that really hangs still stops here.
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
