"""Readers that turn interaction files into :class:`Interactions`.

Three formats are understood, one module each:

* ``seq``: one user per line, ``user item item ...`` in time order (the SASRec/SIGMA format);
* ``inter``: RecBole atomic ``.inter`` files (tab separated, typed ``name:type`` header);
* ``table``: CSV, TSV or Parquet with configurable column names, read through pandas.

``common`` holds what they share; ``load`` picks one by format or extension.

Every problem with the input is raised as a one-line :class:`DataError` naming the file and the
line (or column), because these messages are what a CLI user sees instead of a traceback.
"""

from sigma_pyro.data.readers.common import FORMATS, MIN_ITEMS_PER_USER
from sigma_pyro.data.readers.inter import read_inter_file
from sigma_pyro.data.readers.load import load_interactions
from sigma_pyro.data.readers.seq import read_sequence_file
from sigma_pyro.data.readers.table import read_table

__all__ = [
    "FORMATS",
    "MIN_ITEMS_PER_USER",
    "load_interactions",
    "read_inter_file",
    "read_sequence_file",
    "read_table",
]
