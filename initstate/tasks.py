"""Built-in tasks with known optimal losses (used by the studies; useful in your own tests)."""

from initstate._src.hmm import bayes_step_losses
from initstate._src.hmm import fit_hmm
from initstate._src.hmm import HMM
from initstate._src.hmm import random_hmm
from initstate._src.hmm import sample
from initstate._src.hmm import sample_sentences
from initstate._src.hmm import Sentences

__all__ = ('bayes_step_losses', 'fit_hmm', 'HMM', 'random_hmm', 'sample', 'sample_sentences',
           'Sentences')
