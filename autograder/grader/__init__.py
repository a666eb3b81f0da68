"""The CI grader: grades whole submissions, each in its own sandboxed worker process.

``cli`` (the ``autograde`` command) plans a batch and writes the outputs, ``judge`` grades one
submission, ``remote`` runs its worker from the judge's side, ``worker`` is the worker itself,
``wire`` the messages between them, ``sandbox`` what a worker may do, ``report`` the results
files and ``cluster`` the same judge on a Dask cluster.

Nothing is imported here: the worker imports this package inside the sandbox, and a student's
notebook never needs it.
"""
