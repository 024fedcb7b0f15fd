"""Write it yourself: exercises for every piece of the GPT, checked against ours, inside the model.

    from minitransformer import practice
    report = practice.check("attention", my_attention)   # .passed, .mistake, str(report)
    with practice.use(attention=my_attention):          # every GPT computes with it
        print(practice.compare())                       # the shipped model with hers and with ours

exercises.py holds the exercises (the reference is our own code), mistakes.py the catalogue of known
mistakes; checker.py checks one function and names the mistake; workspace.py writes the stubs,
loads the learner's files and puts her functions into the model; isolation.py keeps her code
apart from ours and from her session. The command line's `minitransformer practice ...`
(commands/practice_command.py) does the same from a shell.
"""

from .checker import Report, check
from .exercises import EXERCISES
from .isolation import original
from .workspace import Comparison, PieceFailed, compare, start, use

original()  # torch's own functions, before any learner's file runs (isolation.py)

__all__ = ["EXERCISES", "Comparison", "PieceFailed", "Report", "check", "compare", "start", "use"]
