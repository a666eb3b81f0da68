"""DSC190 lecture 17 course library: helpers students may call (the references live in ``course_lib.reference``)."""

from course_lib.data import load_mnist, mnist_split, read_idx
from course_lib.device import get_device
from course_lib.gmm import fit_em, m_step, sample_gmm
from course_lib.models import BayesianLogisticRegression, Bimodal2D, ConjugateGaussian
from course_lib.progress import progress

__all__ = [
    "BayesianLogisticRegression",
    "Bimodal2D",
    "ConjugateGaussian",
    "fit_em",
    "get_device",
    "load_mnist",
    "m_step",
    "mnist_split",
    "progress",
    "read_idx",
    "sample_gmm",
]
