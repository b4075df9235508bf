"""opai_lib: a small library for studying one-shot pruning at initialisation.

One module per idea: ``data`` (datasets, tensor-resident batches), ``models`` (registry,
``prunable``), ``masks`` (applying and checking masks), ``train`` (masked training and
evaluation). The notebooks under ``notebooks/`` import these and nothing else.
"""

__version__ = "0.1.0"
