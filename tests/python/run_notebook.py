"""Runs a notebook as Jupyter would, with nbclient: `python run_notebook.py NOTEBOOK OUT`
executes NOTEBOOK in a fresh kernel (its working folder the notebook's own) and writes the
executed copy, outputs included, to OUT. A cell that fails ends the run with status 1 after
printing the cell and its error (the copy up to that cell is still written)."""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

notebook, out = Path(sys.argv[1]), Path(sys.argv[2])
nb = nbformat.read(notebook, as_version=4)
# The venv's own kernel (python3: the interpreter running this), whatever the notebook names.
client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}})
try:
    client.execute()
except CellExecutionError as e:
    nbformat.write(nb, out)
    print(f"{notebook.name}: {e}", file=sys.stderr)
    sys.exit(1)
nbformat.write(nb, out)
