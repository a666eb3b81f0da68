"""Imported by the judges' fork server (its preload list): the server dies with the grader.

``autograde`` forks its judges from a :mod:`multiprocessing.forkserver` process that has
imported torch and the checks once. That server only exits when every judge has closed its
end of the server's "alive" pipe, and each judge dies (``PR_SET_PDEATHSIG``) only when its
parent, the server, dies: killed with ``kill -9``, the grader would leave both behind. Run
inside the server, this module ties the server to the grader the same way; the judges, their
zygotes and workers then follow it down their own parent-death chain. (Had the grader died
before this ran, no judge holds the pipe yet and the server exits on its own.) Importing it
anywhere else only asks the kernel to end that process with its parent.
"""

from __future__ import annotations

from autograder.grader.sandbox import die_with_parent

die_with_parent()
