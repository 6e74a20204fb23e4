"""Reasoning sets for the evals, the demo and calibration: one loader built on `datasets`.

See :mod:`relaygen_sgl.problem_sets.load` for the specifiers (bundled offline sets, the paper's
hub sets by name, ``hf:NAME[:CONFIG]``, local parquet/JSON/CSV files, ``save_to_disk`` folders).
The package is not named ``datasets`` so that it never shadows the library it is built on.
"""

from relaygen_sgl.problem_sets.args import add_field_args, field_kwargs
from relaygen_sgl.problem_sets.bundled import BUNDLED
from relaygen_sgl.problem_sets.fields import ANSWER_FIELDS, QUESTION_FIELDS, Fields, unanswered_note
from relaygen_sgl.problem_sets.load import PRESETS, SPEC_HELP, load_problems
from relaygen_sgl.problem_sets.problem import INSTRUCTION, DatasetError, Problem

__all__ = [
    "ANSWER_FIELDS",
    "BUNDLED",
    "INSTRUCTION",
    "PRESETS",
    "QUESTION_FIELDS",
    "SPEC_HELP",
    "DatasetError",
    "Fields",
    "Problem",
    "add_field_args",
    "field_kwargs",
    "load_problems",
    "unanswered_note",
]
