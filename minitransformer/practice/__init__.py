"""Write it yourself: exercises for every piece of the GPT, checked against ours, inside the model.

    from minitransformer import practice
    report = practice.check("attention", my_attention)   # .passed, .mistake, str(report)
    with practice.use(attention=my_attention):          # every GPT computes with it
        ...

exercises.py holds the exercises (the reference is our own code), mistakes.py the catalogue of known
mistakes; checker.py checks one function and names the mistake; workspace.py writes the stubs,
loads the learner's files and puts her functions into the model. The command line's
`minitransformer practice ...` (commands/practice_command.py) does the same from a shell.
"""

from .checker import Report, check
from .exercises import EXERCISES
from .workspace import run_shipped, start, use

__all__ = ["EXERCISES", "Report", "check", "run_shipped", "start", "use"]
