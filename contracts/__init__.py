"""The contracts every layer shares, and the bottom layer: run settings, the state
schemas, what models must return, and the errors and retry policy. Nothing here imports
the nodes, the sandbox backends, the graphs or the CLI (``import-linter`` checks it:
``[tool.importlinter]`` in pyproject.toml).

contracts <- sandbox <- nodes <- graphs <- evaluation <- cli
"""
